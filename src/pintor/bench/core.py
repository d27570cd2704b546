"""`run_bench`: pintor and stock diffusers on the same weights, settings and seeds, in one process.

Each side runs in its own phase (load, warm-up, timed repeats, one instrumented run) and is freed before
the other loads, so each phase's peak memory is its own. Every figure is reported for both sides and as
a ratio; the instrumented runs at the same seed give the images whose PSNR bounds the quality.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pintor.host import host_info, versions

PROMPTS = (
    "a red circle above a blue square",
    "a green triangle left of a yellow circle",
    "a purple square below an orange triangle",
    "a blue circle right of a red triangle",
    "a yellow square above a green circle",
    "an orange circle left of a purple square",
    "a red triangle below a blue circle",
    "a green square right of a yellow triangle",
)

SCHEMA = "pintor-bench/1"


@dataclass
class BenchConfig:
    """What `pintor bench` measures.

    Args:
        model (`str`): registry name or folder; with `random_weights`, one of `RANDOM_MODELS`.
        device (`str`, *optional*): cuda, then cpu.
        dtype (`str`, *optional*): pintor's dtype (fp16 on GPU, fp32 on CPU by default).
        baseline_dtype (`str`, *optional*): the stock side's dtype (fp16 on GPU, fp32 on CPU by default).
        width, height, steps, prior_steps, scheduler: generation settings of both sides (model defaults if `None`).
        pintor_steps, pintor_prior_steps, pintor_scheduler: step-changing settings for pintor alone.
        pintor_candidates (`int`): images pintor draws per image kept (`GenerationRequest.candidates`). 1 by
            default, whatever the model's default, so that both sides draw the same images.
        batch (`int`): images per call: `batch` prompts in one stock call, `batch` requests through
            `Painter.run_batch`.
        repeat (`int`): timed runs per side after `warmup` untimed ones.
        optimizations (`str`, *optional*): pintor's options in `Optimizations.parse` syntax, over its defaults.
        low_vram, lowest_vram (`bool`): pintor's memory modes (the stock side stays resident).
        random_weights (`bool`): full-size architecture from the shipped configs, random weights.
        cold_start (`bool`): time `pintor generate` (and a stock script) from process start to PNG.
        baseline (`bool`): run the stock side (off: pintor's figures alone).
    """

    model: str = "pintor-shapes"
    device: str | None = None
    dtype: str | None = None
    baseline_dtype: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    prior_steps: int | None = None
    scheduler: str | None = None
    pintor_steps: int | None = None
    pintor_prior_steps: int | None = None
    pintor_scheduler: str | None = None
    pintor_candidates: int = 1
    batch: int = 1
    repeat: int = 3
    warmup: int = 1
    seed: int = 0
    optimizations: str | None = None
    low_vram: bool = False
    lowest_vram: bool = False
    random_weights: bool = False
    random_root: str | None = None
    cold_start: bool = True
    baseline: bool = True
    peak_tflops: float | None = None
    label: str | None = None
    prompts: tuple[str, ...] = field(default=PROMPTS)


def run_bench(cfg: BenchConfig, log=None) -> dict:
    """Runs the benchmark and returns its JSON-ready report (see `write_report` and `format_table`)."""
    import pintor
    from pintor import devices
    from pintor.optim import Optimizations, default_optimizations
    from pintor.painter import resolve_model
    from pintor.registry import FAMILY_DEFAULTS

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if cfg.batch < 1 or cfg.repeat < 1 or cfg.warmup < 0:
        raise ValueError("batch and repeat must be positive and warmup non-negative")
    if not isinstance(cfg.pintor_candidates, int) or cfg.pintor_candidates < 1:
        raise ValueError(f"pintor_candidates must be a positive integer, got {cfg.pintor_candidates!r}")
    device, dtype = devices.resolve(cfg.device, cfg.dtype)
    kind = device.split(":")[0]
    _, base_dtype = devices.resolve(device, cfg.baseline_dtype or ("float32" if kind == "cpu" else "float16"))

    model_ref = cfg.model
    if cfg.random_weights:
        from pintor.bench.random_weights import ensure_random_model

        t0 = time.perf_counter()
        model_ref = str(ensure_random_model(cfg.model, "float16" if kind != "cpu" else "float32", cfg.random_root,
                                            device=device if kind == "cuda" else "cpu", log=log))
        log(f"random-weights model at {model_ref} ({time.perf_counter() - t0:.1f} s)")
    spec, meta = resolve_model(model_ref)
    if not spec.family.startswith("kandinsky"):
        raise ValueError(f"pintor bench measures Kandinsky 2.x models, not {spec.family}")
    settings = {**FAMILY_DEFAULTS[spec.family], **spec.defaults, **meta.get("defaults", {})}
    for k in ("width", "height", "steps", "prior_steps", "scheduler"):
        if getattr(cfg, k) is not None:
            settings[k] = getattr(cfg, k)
    ours = dict(settings)
    for k in ("steps", "prior_steps", "scheduler"):
        if getattr(cfg, f"pintor_{k}") is not None:
            ours[k] = getattr(cfg, f"pintor_{k}")
    settings["candidates"] = 1  # the stock pipelines draw one image per image
    ours["candidates"] = cfg.pintor_candidates
    opts = Optimizations.parse(cfg.optimizations, default_optimizations(device))
    prompts = [cfg.prompts[i % len(cfg.prompts)] for i in range(cfg.batch)]
    sources = dict(spec.sources)
    prior_src = sources["prior"]
    decoder_src = sources.get("decoder") or sources.get("main")

    report: dict = {
        "schema": SCHEMA,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "host": host_info(device),
        "versions": versions(),
        "settings": {
            "model": cfg.model, "model_ref": model_ref, "random_weights": cfg.random_weights, "device": device,
            "dtype": _dt_name(dtype), "baseline_dtype": _dt_name(base_dtype), "batch": cfg.batch,
            "repeat": cfg.repeat, "warmup": cfg.warmup, "seed": cfg.seed, "prompts": prompts,
            "generation": _json_settings(settings), "pintor_generation": _json_settings(ours),
            "low_vram": cfg.low_vram, "lowest_vram": cfg.lowest_vram,
            "optimizations": opts.resolved(device, cfg.low_vram, cfg.lowest_vram).to_json(),
            "optimizations_spec": cfg.optimizations, "label": cfg.label,
        },
    }
    _warm_page_cache(model_ref, sources)

    from pintor.bench.measure import PeakMemory, compare_images, synchronize

    mem = PeakMemory(device)
    images = {}

    # -- stock ---------------------------------------------------------------------------------------------
    if cfg.baseline:
        from pintor.bench.baseline import load_stock, stock_generate
        from pintor.schedulers import make_scheduler

        log("stock: load")
        _free(device)
        mem.reset()
        t0 = time.perf_counter()
        prior, decoder = load_stock(spec.family, prior_src, decoder_src, device, base_dtype)
        synchronize(device)
        load_s = time.perf_counter() - t0
        if cfg.scheduler is not None:
            decoder.scheduler = make_scheduler(settings["scheduler"], dict(decoder.scheduler.config))

        def stock_run(seed):
            return stock_generate(prior, decoder, spec.family, prompts, seed, steps=settings["steps"],
                                  prior_steps=settings["prior_steps"], guidance_scale=settings["guidance_scale"],
                                  prior_guidance_scale=settings["prior_guidance_scale"], width=settings["width"],
                                  height=settings["height"])

        modules = {"text_encoder": [prior.text_encoder, getattr(decoder, "text_encoder", None)],
                   "image_encoder": [prior.image_encoder], "prior": [prior.prior], "unet": [decoder.unet]}
        report["baseline"], images["baseline"] = _phase("stock", stock_run, modules, decoder.movq, cfg, device,
                                                        mem, load_s, log)
        unet_config = dict(decoder.unet.config)
        del prior, decoder, stock_run, modules
        _free(device)
    else:
        unet_config = None

    # -- pintor --------------------------------------------------------------------------------------------
    from pintor.backends.common import RunControl
    from pintor.request import GenerationRequest

    log("pintor: load")
    _free(device)
    mem.reset()
    t0 = time.perf_counter()
    # Held in a dict, not a closure variable, so that the last reference can be dropped before returning.
    held = {"painter": pintor.load(model_ref, device=device, dtype=_dt_name(dtype), low_vram=cfg.low_vram,
                                   lowest_vram=cfg.lowest_vram, optimizations=opts)}
    synchronize(device)
    load_s = time.perf_counter() - t0
    control = RunControl(show_progress=False)

    def pintor_run(seed):
        painter = held["painter"]
        reqs = [GenerationRequest(prompt=p, seed=seed + i, steps=ours["steps"], prior_steps=ours["prior_steps"],
                                  guidance_scale=ours["guidance_scale"],
                                  prior_guidance_scale=ours["prior_guidance_scale"], width=ours["width"],
                                  height=ours["height"], scheduler=ours.get("scheduler"),
                                  candidates=ours["candidates"])
                for i, p in enumerate(prompts)]
        if len(reqs) == 1:
            return painter.run(reqs[0], control).images
        return [img for r in painter.run_batch(reqs, control) for img in r.images]

    comps = held["painter"].components
    modules = {"text_encoder": [comps.get("prior.text_encoder"), comps.get("text_encoder")],
               "image_encoder": [comps.get("prior.image_encoder")], "prior": [comps.get("prior.prior")],
               "unet": [comps.get("unet")]}
    report["pintor"], images["pintor"] = _phase("pintor", pintor_run, modules, comps.get("movq"), cfg, device, mem,
                                                load_s, log)
    deep = getattr(comps.get("unet"), "pintor_deepcache", None)
    if deep is not None:
        report["pintor"]["deepcache"] = {"interval": deep.interval, "depth": deep.depth}
    if unet_config is None:
        unet_config = dict(comps["unet"].config)
    held.clear()
    del modules, comps
    _free(device)

    # Last, so that a compiled configuration starts from the compile cache its in-process run just filled.
    if cfg.cold_start:
        log("cold start: pintor generate")
        report["cold_start"] = {"pintor_s": _cold_start_pintor(model_ref, device, dtype, ours, prompts[0], cfg, opts)}
        if cfg.baseline:
            log("cold start: stock diffusers")
            report["cold_start"]["baseline_s"] = _cold_start_stock(spec.family, prior_src, decoder_src, device,
                                                                   base_dtype, settings, prompts[0], cfg.seed)
            report["cold_start"]["speedup"] = _ratio(report["cold_start"]["baseline_s"], report["cold_start"]["pintor_s"])

    # -- comparisons ---------------------------------------------------------------------------------------
    if cfg.baseline:
        report["quality"] = compare_images(images["pintor"], images["baseline"])
        report["quality"]["same_settings"] = _json_settings(ours) == _json_settings(settings)
        report["ratios"] = _ratios(report["pintor"], report["baseline"])
    report["unet"] = _unet_report(unet_config, cfg, device, report, settings, ours)
    report["_images"] = images  # for callers (tests, saving); `write_report` leaves them out
    return report


def _phase(name, run, modules, movq, cfg: BenchConfig, device, mem, load_s, log) -> tuple[dict, list]:
    """Warm-up, timed repeats and one instrumented run of one side."""
    from pintor.bench.measure import StageTimer, synchronize

    out: dict = {"load_s": load_s}
    after_load = mem.read()
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    seeds = iter(range(cfg.seed + 10_000, cfg.seed + 10_000 + 1000 * (cfg.warmup + cfg.repeat + 1), 1000))

    def timed(label: str, count: int) -> list[float]:
        # Each run gets the next seed, so no two timed runs draw the same noise.
        secs = []
        for i in range(count):
            log(f"{name}: {label} {i + 1}/{count}")
            t0 = time.perf_counter()
            run(next(seeds))
            synchronize(device)
            secs.append(time.perf_counter() - t0)
        return secs

    first = timed("warm-up", cfg.warmup)
    times = timed("run", cfg.repeat)
    timer = StageTimer(device)
    for stage, mods in modules.items():
        for m in mods:
            timer.attach(stage, m)
    if movq is not None:
        timer.wrap("movq_decode", movq, "decode")
    log(f"{name}: instrumented run")
    try:
        t0 = time.perf_counter()
        images = run(cfg.seed)
        synchronize(device)
        instrumented = time.perf_counter() - t0
    finally:
        timer.detach()
    end_to_end = statistics.median(times)
    out.update(
        first_run_s=first[0] if first else None,
        compile_s=max(first[0] - end_to_end, 0.0) if first else None,
        end_to_end_s=end_to_end,
        end_to_end_runs_s=times,
        images_per_s=cfg.batch / end_to_end,
        instrumented_s=instrumented,
        stages=timer.summary(),
        memory=mem.read(),
        memory_after_load=after_load,
    )
    return out, images


def _ratios(p: dict, b: dict) -> dict:
    """stock / pintor for times (how many times faster), pintor / stock for throughput and memory."""
    r = {
        "load_speedup": _ratio(b["load_s"], p["load_s"]),
        "end_to_end_speedup": _ratio(b["end_to_end_s"], p["end_to_end_s"]),
        "images_per_s": _ratio(p["images_per_s"], b["images_per_s"]),
    }
    for k in ("text_encoding_s", "prior_s", "decoder_s", "decoder_step_s", "unet_call_s", "movq_decode_s"):
        if p["stages"].get(k) and b["stages"].get(k):
            r[k.removesuffix("_s") + "_speedup"] = _ratio(b["stages"][k], p["stages"][k])
    for k in ("rss_peak_mb", "rss_growth_mb", "cuda_max_allocated_mb", "cuda_max_reserved_mb"):
        if p["memory"].get(k) and b["memory"].get(k):
            r[k.removesuffix("_mb") + "_ratio"] = _ratio(p["memory"][k], b["memory"][k])
    return r


def _unet_report(unet_config, cfg, device, report, settings, ours) -> dict:
    """FLOPs of one full UNet call at the run's shapes and the TFLOP/s each side achieved in its UNet calls."""
    from pintor.bench.measure import bf16_peak_tflops, unet_flops

    guided = settings["guidance_scale"] > 1
    batch = cfg.batch * (2 if guided else 1)
    flops = unet_flops(unet_config, batch, settings["height"], settings["width"])
    peak = cfg.peak_tflops or bf16_peak_tflops(report["host"].get("device_name", ""))
    out = {"flops_per_call": flops, "batch_per_call": batch, "peak_bf16_tflops": peak}
    for side in ("pintor", "baseline"):
        st = report.get(side, {}).get("stages", {})
        if st.get("unet_call_s"):
            # Full-UNet-equivalent rate: with DeepCache the cheap calls count as full ones (an effective rate).
            # pintor's calls carry every candidate in the batch: K times the images of a stock call.
            k = ours.get("candidates", 1) if side == "pintor" else 1
            tflops = flops * k * st["unet_calls"] / st["unet_total_s"] / 1e12
            out[f"{side}_tflops"] = tflops
            if peak:
                out[f"{side}_share_of_peak"] = tflops / peak
    return out


# -- cold start -----------------------------------------------------------------------------------------------
def _cold_start_pintor(model_ref, device, dtype, settings, prompt, cfg, opts) -> float:
    """Seconds from spawning `pintor generate` to its PNG on disk."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cold.png"
        args = [sys.executable, "-m", "pintor", "generate", prompt, "--model", model_ref, "--device", device,
                "--dtype", _dt_name(dtype), "--seed", str(cfg.seed), "--steps", str(settings["steps"]),
                "--prior-steps", str(settings["prior_steps"]), "-W", str(settings["width"]),
                "-H", str(settings["height"]), "--candidates", str(settings["candidates"]), "-o", str(out), "-q"]
        if settings.get("scheduler"):
            args += ["--scheduler", settings["scheduler"]]
        if cfg.low_vram:
            args.append("--low-vram")
        if cfg.lowest_vram:
            args.append("--lowest-vram")
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
        if cfg.optimizations:
            env["PINTOR_OPTIMIZATIONS"] = cfg.optimizations
        return _timed_subprocess(args, out, env)


def _cold_start_stock(family, prior_src, decoder_src, device, dtype, settings, prompt, seed) -> float:
    from pintor.backends.common import dtype_kwargs
    from pintor.bench.baseline import STOCK_PIPELINES, cold_start_script

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "stock_cold_start.py"
        dtype_kw = next(iter(dtype_kwargs(dtype)))
        script.write_text(cold_start_script(dtype_kw))
        out = Path(tmp) / "cold.png"
        prior_cls, decoder_cls = STOCK_PIPELINES[family]
        args = [sys.executable, str(script), prior_cls, decoder_cls, prior_src, decoder_src, device, _dt_name(dtype),
                prompt, str(seed), str(settings["steps"]), str(settings["prior_steps"]), str(settings["width"]),
                str(settings["height"]), str(out)]
        return _timed_subprocess(args, out, dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore"))


def _timed_subprocess(args, out: Path, env) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"cold start failed ({' '.join(args[:4])}...): {' | '.join(tail)}")
    return seconds


# -- the record ------------------------------------------------------------------------------------------------
def write_report(report: dict, path: str | Path) -> Path:
    """Writes the report as JSON (without the images); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in report.items() if not k.startswith("_")}
    path.write_text(json.dumps(data, indent=2, allow_nan=False, default=_json_default) + "\n")
    return path


def default_result_path(report: dict, results_dir: str | Path = "bench/results") -> Path:
    """bench/results/<date>-<model>-<device>[-<label>].json"""
    s = report["settings"]
    date = report["date"][:10]
    device = s["device"].split(":")[0]
    if device == "cuda":
        name = report["host"].get("device_name", "cuda").lower()
        device = next((g for g in ("h200", "h100", "a100", "l4", "rtx-2060") if g.replace("-", " ") in name), "cuda")
    parts = [date, s["model"].replace("/", "-").strip("-"), device]
    if s.get("label"):
        parts.append(s["label"])
    return Path(results_dir) / ("-".join(parts) + ".json")


def format_table(report: dict) -> str:
    """A readable side-by-side table of a report."""
    s, p, b = report["settings"], report.get("pintor", {}), report.get("baseline")
    g = s["generation"]
    head = (f"pintor bench  {s['model']}{' (random weights)' if s['random_weights'] else ''}  "
            f"{report['host'].get('device_name', s['device'])}  {g['width']}x{g['height']}  "
            f"{g['steps']} decoder + {g['prior_steps']} prior steps  batch {s['batch']}  "
            f"pintor {s['dtype']} / stock {s['baseline_dtype']}")
    pg = s["pintor_generation"]
    if any(pg.get(k) != g.get(k) for k in ("steps", "prior_steps", "scheduler")):
        head += f"\n  pintor runs {pg['steps']} + {pg['prior_steps']} steps, scheduler {pg.get('scheduler')}"
    if (pg.get("candidates") or 1) > 1:
        head += f"\n  pintor draws {pg['candidates']} candidates per image and keeps the best (stock draws one)"
    if s["low_vram"] or s["lowest_vram"]:
        head += f"\n  pintor memory mode: {'lowest' if s['lowest_vram'] else 'low'} VRAM"
    rows = [("", "pintor", "stock", "ratio")]

    def row(label, pv, bv, fmt="{:.3f}", ratio=None):
        rows.append((label, "-" if pv is None else fmt.format(pv), "-" if bv is None else fmt.format(bv),
                     "" if ratio is None else ratio))

    def speed(pv, bv):
        if not (pv and bv):
            return None
        return f"{bv / pv:.2f}x faster" if bv >= pv else f"{pv / bv:.2f}x slower"

    cs = report.get("cold_start", {})
    if cs:
        row("cold start to PNG (s)", cs.get("pintor_s"), cs.get("baseline_s"), ratio=speed(cs.get("pintor_s"), cs.get("baseline_s")))
    bb = b or {}
    row("load (s)", p.get("load_s"), bb.get("load_s"), ratio=speed(p.get("load_s"), bb.get("load_s")))
    row("first run (s)", p.get("first_run_s"), bb.get("first_run_s"))
    row("  of which compile/warm-up (s)", p.get("compile_s"), bb.get("compile_s"))
    row("end to end (s)", p.get("end_to_end_s"), bb.get("end_to_end_s"),
        ratio=speed(p.get("end_to_end_s"), bb.get("end_to_end_s")))
    ips, bips = p.get("images_per_s"), bb.get("images_per_s")
    row("images/s", ips, bips, ratio=f"{ips / bips:.2f}x" if ips and bips else None)
    ps, bs = p.get("stages", {}), bb.get("stages", {})
    for label, key, scale, fmt in (("text encoding (ms)", "text_encoding_s", 1e3, "{:.1f}"),
                                   ("image encoder (ms)", "image_encoder_s", 1e3, "{:.1f}"),
                                   ("prior loop (s)", "prior_s", 1, "{:.3f}"),
                                   ("decoder loop (s)", "decoder_s", 1, "{:.3f}"),
                                   ("decoder step, median (ms)", "decoder_step_s", 1e3, "{:.1f}"),
                                   ("UNet call, median (ms)", "unet_call_s", 1e3, "{:.1f}"),
                                   ("MoVQ decode (ms)", "movq_decode_s", 1e3, "{:.1f}")):
        pv, bv = ps.get(key), bs.get(key)
        if pv is None and bv is None:
            continue
        row(label, None if pv is None else pv * scale, None if bv is None else bv * scale, fmt,
            ratio=speed(pv, bv))
    u = report.get("unet", {})
    if u.get("pintor_tflops") or u.get("baseline_tflops"):
        per_call = (f"{u['flops_per_call'] / 1e12:.2f} TFLOP" if u["flops_per_call"] >= 1e11
                    else f"{u['flops_per_call'] / 1e9:.2f} GFLOP")
        row(f"UNet TFLOP/s ({per_call}/call)", u.get("pintor_tflops"), u.get("baseline_tflops"), "{:.3f}")
        if u.get("peak_bf16_tflops"):
            row(f"  share of bf16 peak {u['peak_bf16_tflops']:.0f}", u.get("pintor_share_of_peak"),
                u.get("baseline_share_of_peak"), "{:.1%}")
    pm, bm = p.get("memory", {}), bb.get("memory", {})
    for label, key in (("peak RSS (MB)", "rss_peak_mb"), ("  RSS growth in the phase (MB)", "rss_growth_mb"),
                       ("CUDA max allocated (MB)", "cuda_max_allocated_mb"),
                       ("CUDA max reserved (MB)", "cuda_max_reserved_mb")):
        if pm.get(key) is not None or bm.get(key) is not None:
            pv, bv = pm.get(key), bm.get(key)
            row(label, pv, bv, "{:.0f}", ratio=f"{pv / bv:.2f}x" if pv and bv else None)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [head] + ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                      for r in rows]
    q = report.get("quality")
    if q:
        worst = "identical" if q["identical"] else f"min PSNR {q['psnr_db_min']:.1f} dB"
        lines.append(f"quality vs stock at the same seeds: {worst} (bound {q['bound_db']:.0f} dB: "
                     f"{'within' if q['within_bound'] else 'OUTSIDE'}"
                     f"{'' if q.get('same_settings', True) else '; pintor used ' + _what_differs(s)})")
    return "\n".join(lines)


# -- helpers -----------------------------------------------------------------------------------------------------
def _what_differs(s: dict) -> str:
    """Words for what pintor's side changed: the reason its pixels are not the stock pixels."""
    ours, stock = s.get("pintor_generation", {}), s.get("generation", {})
    parts = []
    if any(ours.get(k) != stock.get(k) for k in ("steps", "prior_steps", "scheduler")):
        parts.append("other steps/scheduler")
    if ours.get("candidates", 1) != stock.get("candidates", 1):
        parts.append(f"{ours.get('candidates')} candidates")
    return " and ".join(parts) or "other settings"

def _ratio(a, b):
    return a / b if a and b else None


def _dt_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _json_settings(d: dict) -> dict:
    return {k: d.get(k) for k in ("width", "height", "steps", "prior_steps", "guidance_scale",
                                  "prior_guidance_scale", "scheduler", "candidates")}


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _git_commit() -> dict:
    root = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        if sha.returncode == 0:
            return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"sha": None, "dirty": None}


def _warm_page_cache(model_ref: str, sources: dict) -> None:
    """Reads every weight file once, so that both sides load from the page cache, not one from disk."""
    folders = {Path(model_ref)} if Path(model_ref).is_dir() else set()
    folders |= {Path(s) for s in sources.values() if Path(s).is_dir()}
    for folder in folders:
        for f in folder.rglob("*.safetensors"):
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def settings_dict(cfg: BenchConfig) -> dict:
    return asdict(cfg)
