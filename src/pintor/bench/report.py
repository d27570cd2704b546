"""The README's performance table, made from `bench/results/*.json`.

    python -m pintor.bench.report bench/results/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

_ON = ("compile", "cuda_graphs", "fuse_qkv", "channels_last", "cudnn_benchmark")


def _options(s: dict) -> str:
    o = s.get("optimizations", {})
    parts = [k for k in _ON if o.get(k)]
    if o.get("compile") and o.get("compile_modules", "unet+prior+movq") != "unet+prior+movq":
        parts[parts.index("compile")] = f"compile ({o['compile_modules']})"
    if o.get("deepcache_interval", 0) > 1:
        parts.append(f"DeepCache {o['deepcache_interval']}")
    if o.get("prior_scheduler"):
        parts.append(f"prior {o['prior_scheduler']}")
    g, pg = s.get("generation", {}), s.get("pintor_generation", {})
    steps = ("scheduler", "steps", "prior_steps")
    if pg and any(pg.get(k) != g.get(k) for k in steps):
        parts.append(f"{pg.get('scheduler')} {pg.get('steps')}+{pg.get('prior_steps')} steps")
    if (pg.get("candidates") or 1) > 1:
        parts.append(f"{pg['candidates']} candidates")
    if s.get("low_vram"):
        parts.append("low VRAM")
    if s.get("lowest_vram"):
        parts.append("lowest VRAM")
    return ", ".join(parts) or "defaults"


def _fmt(v, spec="{:.2f}", none="-"):
    return none if v is None else spec.format(v)


def table(reports: list[dict]) -> str:
    """A Markdown table with one row per result file."""
    head = ("| device | model | size, steps | pintor | stock s | pintor s | speed-up | images/s | "
            "UNet TFLOP/s (share of peak) | peak alloc. MB | PSNR vs stock | cold start s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in reports:
        s, p, b = r["settings"], r.get("pintor", {}), r.get("baseline", {})
        batch = f", batch {s['batch']}" if s.get("batch", 1) > 1 else ""
        g = s["generation"]
        u = r.get("unet", {})
        tf = _fmt(u.get("pintor_tflops"), "{:.3g}")
        if u.get("pintor_share_of_peak"):
            tf += f" ({u['pintor_share_of_peak']:.0%})"
        q = r.get("quality", {})
        quality = "identical" if q.get("identical") else _fmt(q.get("psnr_db_min"), "{:.1f} dB")
        mem = p.get("memory", {})
        peak = mem.get("cuda_max_allocated_mb") or mem.get("rss_peak_mb")
        cs = r.get("cold_start", {})
        name = r["host"].get("device_name", s["device"]).replace("NVIDIA ", "")
        model = s["model"].split("/")[-1] + (" (random)" if s.get("random_weights") else "")
        lines.append(
            f"| {name} | {model} | {g['width']}x{g['height']}, {g['steps']}+{g['prior_steps']}{batch} | "
            f"{s['dtype']}, {_options(s)} | {_fmt(b.get('end_to_end_s'))} | {_fmt(p.get('end_to_end_s'))} | "
            f"{_fmt(r.get('ratios', {}).get('end_to_end_speedup'), '{:.2f}x')} | {_fmt(p.get('images_per_s'))} | "
            f"{tf} | {_fmt(peak, '{:.0f}')} | {quality} | {_fmt(cs.get('pintor_s'), '{:.1f}')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    paths = [Path(a) for a in (argv if argv is not None else sys.argv[1:])]
    reports = []
    for path in paths:
        data = json.loads(path.read_text())
        if data.get("schema", "").startswith("pintor-bench/"):
            reports.append(data)
    print(table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
