"""`pintor bench`: pintor against stock diffusers, measured side by side in one process.

`pintor.bench.core.run_bench(BenchConfig(...))` runs it from Python; `pintor.bench.cli` is the command.
"""
