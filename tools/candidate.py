"""A candidate embedded model: the shipped pintor-shapes folder with some components' weights taken from runs.

    python tools/candidate.py runs/cand --take controlnet-depth/unet=runs/cn3/model
    pintor eval --model runs/cand --only control --n 96 --baseline docs/pintor-shapes-eval-n96.json --out eval-cand

Each `--take PART=MODEL` copies `MODEL/PART`'s weights (a run's fp32 output, or a checkpoint's
`ema.safetensors` given as a file) into the copy as fp16, exactly as they would ship; the keys, shapes and
dtypes must match the base's, so configs stay the base's. A MODEL folder whose PART/config.json differs from the
base's is a grown architecture (`pintor train decoder --full-attention` or `--widen`): its config is taken too,
and its weights must be exactly the tensors (keys and shapes) of the model that config builds. Everything else,
`pintor.json` included, is copied.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

WEIGHTS = "diffusion_pytorch_model.safetensors"


def checked_fp16(base_file: Path, src_file: Path, *, grown_config: Path | None = None) -> dict:
    """`src_file`'s tensors as fp16, refused (ValueError) unless their keys, shapes and dtypes are `base_file`'s
    (with `grown_config`, unless they are those of the model that config builds: a widened UNet changes shapes)."""
    import safetensors.torch as st

    got = {k: (v.half() if v.is_floating_point() else v) for k, v in st.load_file(src_file).items()}
    if grown_config is None:
        want = st.load_file(base_file)
    else:
        import diffusers

        config = json.loads(grown_config.read_text())
        cls = getattr(diffusers, config.get("_class_name", ""), None)
        if cls is None:
            raise ValueError(f"{grown_config}: _class_name {config.get('_class_name')!r} is not a diffusers model")
        want = {k: (v.half() if v.is_floating_point() else v) for k, v in cls.from_config(config).state_dict().items()}
    if set(got) != set(want):
        raise ValueError(f"{src_file}: keys differ from {grown_config or base_file} "
                         f"({len(set(got) ^ set(want))} not in both)")
    bad = [k for k in want if got[k].shape != want[k].shape or got[k].dtype != want[k].dtype]
    if bad:
        raise ValueError(f"{src_file}: {len(bad)} tensors differ in shape or dtype from {grown_config or base_file}, "
                         f"e.g. {bad[0]}")
    return got


def _architecture(config: Path) -> dict:
    # A config's fields less the bookkeeping ones (`_diffusers_version`...): a run saved by another diffusers
    # version has the base's architecture still.
    return {k: v for k, v in json.loads(config.read_text()).items() if not k.startswith("_")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="the candidate folder to write (must not exist)")
    p.add_argument("--base", default="src/pintor/weights/pintor-shapes", help="the model folder to start from")
    p.add_argument("--take", action="append", default=[], metavar="PART=MODEL",
                   help="e.g. decoder/unet=runs/d/model, or PART=path/to/ema.safetensors")
    args = p.parse_args(argv)
    base, out = Path(args.base), Path(args.out)
    if out.exists():
        sys.exit(f"candidate: {out} exists; give a new folder")
    pairs = []
    for t in args.take:
        part, sep, src = t.partition("=")
        if not sep or not (base / part / WEIGHTS).is_file():
            sys.exit(f"candidate: --take {t!r}: expected PART=MODEL with {base}/PART/{WEIGHTS} present")
        src_file = Path(src) if Path(src).is_file() else Path(src) / part / WEIGHTS
        if not src_file.is_file():
            sys.exit(f"candidate: --take {t!r}: no {src_file}")
        config = src_file.parent / "config.json"
        grown = Path(src).is_dir() and config.is_file() and _architecture(config) != _architecture(
            base / part / "config.json")
        pairs.append((part, src_file, config if grown else None))
    try:  # every part is checked before anything is written
        weights = {part: checked_fp16(base / part / WEIGHTS, src_file, grown_config=config)
                   for part, src_file, config in pairs}
    except ValueError as e:
        sys.exit(f"candidate: {e}")
    import safetensors.torch as st

    shutil.copytree(base, out)
    for part, src_file, config in pairs:
        st.save_file(weights[part], out / part / WEIGHTS)
        if config is not None:
            shutil.copyfile(config, out / part / "config.json")
        print(f"{part} <- {src_file}" + (" (grown: its config too)" if config is not None else ""))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
