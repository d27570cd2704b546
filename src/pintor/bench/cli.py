"""The `pintor bench` command: `add_parser(subparsers)` registers it, `run(args)` executes it.

    pintor bench [--model M] [--device D] [--size WxH] [--steps N] [--prior-steps N] [--candidates K] [--batch B]
                 [--repeat R] [--random-weights] [--opt SPEC] [--low-vram|--lowest-vram] [--json OUT]
    pintor bench --params [--model M]          # built vs published parameter counts, no run
    pintor bench --quality [--model M]         # pintor eval: step-changing options vs 50-step stock

Only the standard library is imported here, so the CLI starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers `bench` on an `argparse` sub-parsers object; returns its parser."""
    p = subparsers.add_parser(
        "bench", help="measure pintor against stock diffusers (speed, memory, quality)",
        description="Runs pintor and the stock diffusers pipelines on the same weights, settings and seeds in one "
                    "process, and reports each figure for both and as a ratio.")
    p.add_argument("--model", "-m", default=None,
                   help="registry name or folder (default: pintor-shapes); with --random-weights: kandinsky-2.2, "
                        "kandinsky-2.1 or pintor-shapes")
    p.add_argument("--device", default=None, help="cuda or cpu (default: the best available)")
    p.add_argument("--dtype", default=None, help="pintor's dtype (default: float16 on GPU, float32 on CPU)")
    p.add_argument("--baseline-dtype", default=None, help="the stock side's dtype (default: as --dtype's default)")
    p.add_argument("--size", default=None, metavar="WxH", help="image size (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="decoder steps of both sides")
    p.add_argument("--prior-steps", type=int, default=None, help="prior steps of both sides")
    p.add_argument("--scheduler", default=None, help="decoder scheduler of both sides")
    p.add_argument("--pintor-steps", type=int, default=None, help="decoder steps of pintor alone (step-changing)")
    p.add_argument("--pintor-prior-steps", type=int, default=None, help="prior steps of pintor alone")
    p.add_argument("--pintor-scheduler", default=None, help="decoder scheduler of pintor alone (dpm++2m, unipc...)")
    p.add_argument("--candidates", type=int, default=1, metavar="K",
                   help="images pintor draws per image kept, the best by CLIP kept (default 1, as stock draws)")
    p.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per side (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first; the first includes compilation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opt", "--optimizations", dest="optimizations", default=None, metavar="SPEC",
                   help="pintor's options over its defaults, e.g. 'compile,cuda_graphs,fuse_qkv,channels_last' or "
                        "'deepcache=3,prior_scheduler=ddim' ('-name' turns one off)")
    p.add_argument("--low-vram", action="store_true", help="pintor with model offload (the stock side stays resident)")
    p.add_argument("--lowest-vram", action="store_true", help="pintor with sequential offload")
    p.add_argument("--random-weights", action="store_true",
                   help="full-size architecture from the shipped configs with random weights (no download)")
    p.add_argument("--random-root", default=None, help="where random-weights models are written "
                                                       "(default ~/.cache/pintor/random-weights)")
    p.add_argument("--no-cold-start", action="store_true", help="skip the cold-start subprocesses")
    p.add_argument("--no-baseline", action="store_true", help="pintor alone (no stock side, no ratios)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 peak, if not in pintor's table")
    p.add_argument("--label", default=None, help="suffix of the default result file name")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT",
                   help="write the JSON here (default: bench/results/<date>-<model>-<device>[-<label>].json)")
    p.add_argument("--no-save", action="store_true", help="print only; write no JSON")
    p.add_argument("--params", action="store_true", help="print built vs published parameter counts and exit")
    p.add_argument("--quality", action="store_true",
                   help="run pintor eval on the model for 50-step stock settings and each step-changing option")
    p.add_argument("--quality-n", type=int, default=24, help="prompts per category for --quality (default 24)")
    p.add_argument("--quality-reference", default="50/25/ddpm", metavar="STEPS/PRIOR_STEPS/SCHEDULER",
                   help="the stock settings --quality compares against (default 50/25/ddpm)")
    p.add_argument("--quality-configs", default=None,
                   help="';'-separated NAME=OPTS[@STEPS[/PRIOR_STEPS[/SCHEDULER]]] for --quality; default: DeepCache 2 "
                        "and 3, DPM++ 2M and UniPC at 25 steps, prior DDIM at 10 steps")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    return p


def _size(text: str | None):
    if text is None:
        return None, None
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        from pintor.errors import PintorError

        raise PintorError(f"--size must look like 768x768, got {text!r}")
    return int(w), int(h)


def run(args) -> int:
    """Executes `pintor bench`; returns the exit code."""
    from pintor.errors import PintorError

    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True))
    model = args.model or ("kandinsky-2.2" if args.random_weights or args.params else "pintor-shapes")
    if args.params:
        return _params(model)
    if args.quality:
        return _quality(args, model, log)
    if args.low_vram and args.lowest_vram:
        raise PintorError("choose one of --low-vram and --lowest-vram")
    if args.batch < 1 or args.repeat < 1 or args.warmup < 0 or args.candidates < 1:
        raise PintorError("--batch, --repeat and --candidates must be positive, --warmup non-negative")
    from pintor.optim import Optimizations

    try:
        Optimizations.parse(args.optimizations)
    except ValueError as e:
        raise PintorError(f"--opt: {e}") from None
    _quiet_libraries()
    from pintor.bench.core import BenchConfig, default_result_path, format_table, run_bench, write_report

    width, height = _size(args.size)
    cfg = BenchConfig(model=model, device=args.device, dtype=args.dtype, baseline_dtype=args.baseline_dtype,
                      width=width, height=height, steps=args.steps, prior_steps=args.prior_steps,
                      scheduler=args.scheduler, pintor_steps=args.pintor_steps,
                      pintor_prior_steps=args.pintor_prior_steps, pintor_scheduler=args.pintor_scheduler,
                      pintor_candidates=args.candidates,
                      batch=args.batch, repeat=args.repeat, warmup=args.warmup, seed=args.seed,
                      optimizations=args.optimizations, low_vram=args.low_vram, lowest_vram=args.lowest_vram,
                      random_weights=args.random_weights, random_root=args.random_root,
                      cold_start=not args.no_cold_start, baseline=not args.no_baseline,
                      peak_tflops=args.peak_tflops, label=args.label)
    report = run_bench(cfg, log=log)
    print(format_table(report))
    if not args.no_save:
        path = write_report(report, args.json_out or default_result_path(report))
        print(path)
    return 0


def _params(model: str) -> int:
    from pintor.bench.random_weights import COMPONENTS, parameter_counts, published_check

    if model not in COMPONENTS:
        from pintor.errors import PintorError

        raise PintorError(f"--params knows {', '.join(COMPONENTS)}, not {model!r}")
    for role, n in parameter_counts(model).items():
        print(f"{role:<16} {n / 1e6:10.1f} M")
    ok = True
    for name, c in published_check(model).items():
        ok &= c["ok"]
        print(f"published {name:<28} {c['published'] / 1e6:8.0f} M  built {c['built'] / 1e6:8.1f} M  "
              f"{c['rel_error']:+.1%}  {'ok' if c['ok'] else 'OFF BY MORE THAN 5%'}")
    return 0 if ok else 1


DEFAULT_QUALITY_CONFIGS = ("deepcache2=deepcache=2;deepcache3=deepcache=3;dpm++2m-25=@25/25/dpm++2m;"
                           "unipc-25=@25/25/unipc;prior-ddim-10=prior_scheduler=ddim@50/10/ddpm")


def _quality(args, model: str, log) -> int:
    """`pintor eval` (text prompts) of the 50-step stock settings and of each step-changing configuration."""
    from pathlib import Path

    from pintor.errors import PintorError
    from pintor.optim import Optimizations

    _quiet_libraries()
    from pintor.eval.evaluate import EVAL_SEED, EvalConfig
    from pintor.eval.evaluate import run as run_eval

    def steps_of(text: str, base: dict) -> dict:
        settings = dict(base)
        parts = text.split("/")
        try:
            settings["steps"] = int(parts[0])
            if len(parts) > 1:
                settings["prior_steps"] = int(parts[1])
        except ValueError:
            raise PintorError(f"steps must look like 25/10/dpm++2m, got {text!r}") from None
        if len(parts) > 2:
            settings["scheduler"] = parts[2]
        return settings

    reference = steps_of(args.quality_reference, {"steps": 50, "prior_steps": 25, "scheduler": "ddpm"})
    configs = [("stock", None, reference)]
    for item in (args.quality_configs or DEFAULT_QUALITY_CONFIGS).split(";"):
        if not item.strip():
            continue
        name, _, rest = item.partition("=")
        opts, _, steps = rest.partition("@")
        settings = steps_of(steps, reference) if steps else dict(reference)
        try:
            configs.append((name.strip(), Optimizations.parse(opts or None), settings))
        except ValueError as e:
            raise PintorError(f"--quality-configs {item!r}: {e}") from None
    out_root = Path(args.json_out).with_suffix("") if args.json_out else Path("bench/results/quality")
    results = {}
    for name, opts, settings in configs:
        log(f"quality: {name}")
        load_kwargs = {"device": args.device, "optimizations": opts or Optimizations()}
        rep = run_eval(model, EvalConfig(n=args.quality_n, seed=EVAL_SEED, modes=False, settings=settings),
                       out_root / name, load_kwargs=load_kwargs, progress=not args.quiet)
        results[name] = {"settings": settings, "optimizations": (opts or Optimizations()).to_json(),
                         "accuracy": rep["prompts"]["accuracy"], "seconds_per_image": rep["speed"]["seconds_per_image"]}
    ref = results["stock"]["accuracy"]["overall"]
    print(f"{'config':<18} {'overall':>8} {'vs stock':>12} {'s/image':>8}")
    for name, r in results.items():
        acc = r["accuracy"]["overall"]
        r["delta_points"] = 100 * (acc - ref)
        r["within_1_point"] = r["delta_points"] >= -1.0
        print(f"{name:<18} {acc:8.3f} {r['delta_points']:+11.1f}p {r['seconds_per_image']:8.3f}"
              + ("" if r["within_1_point"] or name == "stock" else "  (outside 1 point)"))
    out = out_root.with_suffix(".json") if not args.json_out else Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"schema": "pintor-bench-quality/1", "model": model, "n": args.quality_n,
                               "reference": reference, "configs": results}, indent=2) + "\n")
    print(out)
    return 0


def _quiet_libraries() -> None:
    from pintor.cli import _quiet_libraries as quiet

    quiet()
