"""The `pintor` command line. It parses arguments into `GenerationRequest`s and hands them to the library;
it owns no generation logic. Every error is one line on stderr and a non-zero exit code."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

from pintor.errors import PintorError
from pintor.request import SETTING_NAMES

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not usage text plus a line) and exit code 2."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


# -- arguments -------------------------------------------------------------------------------------------------
def _model_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("model")
    g.add_argument("--model", "-m", default=None, help="registry name or local folder (default: pintor-shapes)")
    g.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    g.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: fp16 on GPU, fp32 on CPU)")
    g.add_argument("--low-vram", action="store_true", help="model CPU offload and attention slicing")
    g.add_argument("--lowest-vram", action="store_true", help="sequential CPU offload (slowest, least memory)")
    return p


def _generation_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("generation")
    g.add_argument("--seed", "-s", type=int, default=None, help="seed of the first image (random if omitted)")
    g.add_argument("-n", "--n", type=int, default=None, help="number of images (default 1)")
    g.add_argument("--negative-prompt", "--neg", default=None, help="what to steer away from")
    g.add_argument("--steps", type=int, default=None, help="decoder steps")
    g.add_argument("--prior-steps", type=int, default=None, help="prior steps")
    g.add_argument("--guidance-scale", "--cfg", type=float, default=None, help="decoder guidance scale")
    g.add_argument("--prior-guidance-scale", type=float, default=None, help="prior guidance scale")
    g.add_argument("--width", "-W", type=int, default=None)
    g.add_argument("--height", "-H", type=int, default=None)
    g.add_argument("--scheduler", default=None, help="ddpm, ddim, dpm++2m, dpm++2m-karras, unipc, euler, euler-a, heun")
    g.add_argument("--candidates", type=int, default=None,
                   help="draw this many per image and keep the one CLIP ranks best (default: the model's, 1)")
    g.add_argument("--autoguidance-scale", type=float, default=None,
                   help="steer away from the model's weak decoder, 0 for off (default: the model's)")
    g.add_argument("--max-size", type=int, default=None, help="raise the 2048-pixel limit on width and height")
    o = p.add_argument_group("output")
    o.add_argument("--output", "-o", default=None, help="output PNG path (with -n > 1: PATH-1.png, PATH-2.png...)")
    o.add_argument("--out-dir", default="outputs", help="folder for numbered outputs (default: outputs)")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    return p


def build_parser() -> argparse.ArgumentParser:
    from pintor import __version__

    parser = _Parser(prog="pintor", description="Text-to-image with the Kandinsky 2.x family.")
    parser.add_argument("--version", action="version", version=f"pintor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    common = [_model_options(), _generation_options()]

    p = sub.add_parser("generate", parents=common, help="text to image")
    p.add_argument("prompt", nargs="?", help="the prompt")
    p.add_argument("--prompts-file", help="generate one image per line of this file, in order")
    p.add_argument("--from", dest="from_image", metavar="IMAGE", help="repeat the request recorded in a pintor PNG")

    p = sub.add_parser("mix", parents=common, help="mix weighted images and texts")
    p.add_argument("items", nargs="+", help="image files and/or texts")
    p.add_argument("--weights", "-w", type=float, nargs="+", required=True, help="one weight per item")

    p = sub.add_parser("img2img", parents=common, help="repaint an image towards a prompt")
    p.add_argument("image")
    p.add_argument("prompt")
    p.add_argument("--strength", type=float, default=0.5, help="how much to change, in (0, 1] (default 0.5)")

    p = sub.add_parser("inpaint", parents=common, help="repaint the white region of a mask")
    p.add_argument("image")
    p.add_argument("mask", help="white where the image is repainted")
    p.add_argument("prompt")

    p = sub.add_parser("control", parents=common, help="paint following a depth map (depth ControlNet)")
    p.add_argument("hint", help="depth map (white is near), or a photo with --estimate-depth")
    p.add_argument("prompt")
    p.add_argument("--estimate-depth", action="store_true", help="estimate the depth map from a photo first")
    p.add_argument("--depth-model", default=None, help="hub id or folder of the depth-estimation model")

    p = sub.add_parser("variations", parents=common, help="variations of an image")
    p.add_argument("image")

    sub.add_parser("models", help="list the models, their modes, sizes and whether they are on disk")

    p = sub.add_parser("download", help="download a model's weights (safetensors) from the hub")
    p.add_argument("name")

    p = sub.add_parser("info", help="print the parameters recorded in a PNG")
    p.add_argument("image")
    p.add_argument("--json", action="store_true", help="print only pintor's JSON record")

    p = sub.add_parser("data", help="write datasets")
    dsub = p.add_subparsers(dest="dataset", metavar="DATASET", parser_class=_Parser)
    dsub.required = True
    d = dsub.add_parser("shapes", help="the synthetic shapes world, as an imagefolder with metadata.jsonl")
    d.add_argument("--n", type=int, required=True, help="number of images")
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("eval", help="judge a model on shapes-world prompts with pintor's detector")
    p.add_argument("--model", "-m", default=None, help="registry name or folder (default: pintor-shapes)")
    p.add_argument("--prompts", default=None, help="captions file, one per line (default: a built-in set)")
    p.add_argument("--n", type=int, default=24, help="prompts per category and cases per mode (default 24)")
    p.add_argument("--seed", type=int, default=None, help="seed of prompts and generations")
    p.add_argument("--out", default="eval-results", help="folder for eval.json and contact-sheet.png")
    p.add_argument("--no-modes", action="store_true", help="only text prompts: skip mixing, control, inpainting")
    p.add_argument("--only", default=None, metavar="PARTS",
                   help="comma-separated parts to run: prompts, mix, control, inpaint, variations (default: all)")
    p.add_argument("--steps", type=int, default=None, help="decoder steps (default: the model's)")
    p.add_argument("--prior-steps", type=int, default=None, help="prior steps (default: the model's)")
    p.add_argument("--guidance-scale", type=float, default=None, help="decoder guidance (default: the model's)")
    p.add_argument("--prior-guidance-scale", type=float, default=None, help="prior guidance (default: the model's)")
    p.add_argument("--scheduler", default=None, help="decoder scheduler (default: the model's)")
    p.add_argument("--candidates", type=int, default=None,
                   help="images drawn per image kept, ranked by CLIP (default: the model's)")
    p.add_argument("--autoguidance-scale", type=float, default=None,
                   help="autoguidance by the model's weak decoder, 0 for off (default: the model's)")
    p.add_argument("--device", default=None, help="cpu, cuda... (default: the best available)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--baseline", default=None, metavar="EVAL_JSON",
                   help="an earlier eval.json over the same prompts: adds a paired comparison (McNemar)")

    try:
        from pintor.training.cli import add_parser as add_train_parser
    except ImportError:  # training extras not importable: the rest of the CLI still works
        add_train_parser = None
    if add_train_parser is not None:
        add_train_parser(sub)
    try:
        from pintor.server.cli import add_parser as add_serve_parser
    except ImportError:  # server package not importable: the rest of the CLI still works
        add_serve_parser = None
    if add_serve_parser is not None:
        add_serve_parser(sub)
    from pintor.bench.cli import add_parser as add_bench_parser

    add_bench_parser(sub)
    return parser


# -- generation commands -----------------------------------------------------------------------------------
_MODE_OF = {"generate": "generate", "mix": "mix", "img2img": "img2img", "inpaint": "inpaint", "control": "control",
            "variations": "variations"}
_SETTINGS = ("seed", "n", "negative_prompt", *SETTING_NAMES)


def _requests(args):
    """The requests a generation command asks for, built without loading any model."""
    from pintor.images import is_image_item
    from pintor.request import GenerationRequest

    explicit = {k: getattr(args, k) for k in _SETTINGS if getattr(args, k, None) is not None}
    if args.command == "generate" and args.from_image:
        from pintor.metadata import read_metadata

        record = read_metadata(args.from_image)["pintor"]
        if not record or "request" not in record:
            raise PintorError(f"{args.from_image} has no pintor metadata to repeat")
        base = GenerationRequest.from_json(record["request"])
        if args.prompt:
            explicit["prompt"] = args.prompt
        return [replace(base, **explicit)], args.model or base.model
    mode = _MODE_OF[args.command]
    fields = dict(explicit, mode=mode)
    if mode == "generate":
        if args.prompts_file:
            prompts = _read_prompts(args.prompts_file)
            return [GenerationRequest(prompt=p, **fields) for p in prompts], args.model
        if args.prompt is None:
            raise PintorError("generate needs a PROMPT, --prompts-file or --from")
        fields["prompt"] = args.prompt
    elif mode == "mix":
        fields.update(items=[Path(i) if is_image_item(i) else i for i in args.items], weights=args.weights)
    elif mode == "img2img":
        fields.update(image=Path(args.image), prompt=args.prompt, strength=args.strength)
    elif mode == "inpaint":
        fields.update(image=Path(args.image), mask=Path(args.mask), prompt=args.prompt)
    elif mode == "control":
        fields.update(hint=Path(args.hint), prompt=args.prompt, estimate_depth=args.estimate_depth)
    elif mode == "variations":
        fields.update(image=Path(args.image))
    return [GenerationRequest(**fields)], args.model


def _read_prompts(path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise PintorError(f"prompts file not found: {p}")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise PintorError(f"prompts file {p} is not UTF-8 text") from None
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise PintorError(f"prompts file {p} has no prompts (one per line; # starts a comment)")
    return prompts


def _check_inputs(req) -> None:
    """Reads every input image once now, so a bad file fails before any model loads."""
    from pintor.images import is_image_item, load_image

    for name, what in (("image", "image"), ("mask", "mask"), ("hint", "depth map")):
        if getattr(req, name) is not None:
            load_image(getattr(req, name), what)
    for it in req.items:
        if is_image_item(it):
            load_image(it, "mix item")


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".pintor-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PintorError(f"cannot write to {folder}: {e.strerror or e}") from None


def _slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].rstrip("-") or "image"


def _next_index(folder: Path) -> int:
    nums = [int(m.group(1)) for f in folder.glob("*.png") if (m := re.match(r"(\d{5})-", f.name))]
    return max(nums, default=-1) + 1


class _Outputs:
    """Decides output paths: `-o PATH` (PATH-1.png... for several), or `DIR/NNNNN-slug.png`."""

    def __init__(self, output: str | None, out_dir: str):
        self.output = Path(output) if output else None
        if self.output is not None and self.output.suffix.lower() != ".png":
            raise PintorError(f"output must be a .png file (metadata lives in PNG chunks), got {self.output}")
        self.folder = self.output.parent if self.output is not None else Path(out_dir)
        _check_writable(self.folder)

    def paths(self, count: int, label: str, total_requests: int) -> list[Path]:
        if self.output is not None and total_requests == 1:
            if count == 1:
                return [self.output]
            return [self.output.with_name(f"{self.output.stem}-{i + 1}.png") for i in range(count)]
        start = _next_index(self.folder)
        return [self.folder / f"{start + i:05d}-{_slug(label)}.png" for i in range(count)]


def _label(req) -> str:
    if req.prompt:
        return req.prompt
    if req.mode == "mix":
        return "mix"
    return req.mode


def _cmd_generation(args) -> int:
    import pintor
    from pintor.backends.common import RunControl
    from pintor.metadata import save_png
    from pintor.painter import resolve_model
    from pintor.request import Limits

    limits = Limits(max_size=args.max_size) if args.max_size else Limits()
    if args.max_size is not None and args.max_size < limits.min_size:
        raise PintorError(f"--max-size must be at least {limits.min_size}, got {args.max_size}")
    requests, model = _requests(args)
    resolve_model(model)  # unknown model: fail before anything else
    for req in requests:
        req.validate(limits)
        _check_inputs(req)
    outputs = _Outputs(args.output, args.out_dir)
    _quiet_libraries()
    painter = pintor.load(model, device=args.device, dtype=args.dtype, low_vram=args.low_vram,
                          lowest_vram=args.lowest_vram, limits=limits,
                          depth_estimator=getattr(args, "depth_model", None))
    control = RunControl(show_progress=not args.quiet)
    for req in requests:
        result = painter.run(req, control)
        for path, img, record in zip(outputs.paths(len(result.images), _label(req), len(requests)),
                                     result.images, result.records, strict=True):
            save_png(img, path, record)
            print(path)
    return 0


def _quiet_libraries() -> None:
    """Our bars show the denoising steps; the libraries' loading bars and advisory warnings are noise here."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        dlog.disable_progress_bar()
        dlog.set_verbosity_error()
        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    except ImportError:
        pass


# -- other commands ----------------------------------------------------------------------------------------
def _cmd_models(args) -> int:
    from pintor.registry import REGISTRY, embedded_path

    rows = [("NAME", "MODES", "SIZE", "ON DISK", "DESCRIPTION")]
    for spec in REGISTRY.values():
        if spec.embedded:
            on_disk = "yes (embedded)" if (embedded_path() / "prior").is_dir() else "missing"
            if on_disk != "missing":
                from pintor.painter import resolve_model

                spec = resolve_model(spec.name)[0]  # the modes its shipped weights actually have
        else:
            on_disk = _hub_cached(spec.hub_repos)
        size = f"{spec.size_gb * 1000:.0f} MB" if spec.size_gb < 1 else f"{spec.size_gb:.1f} GB"
        rows.append((spec.name, ",".join(spec.modes), size, on_disk, spec.description))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return 0


def _hub_cached(repos) -> str:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return "unknown"
    have = 0
    for repo in repos:
        found = try_to_load_from_cache(repo, "model_index.json")
        have += isinstance(found, str)
    if have == len(repos):
        return "yes"
    return "no" if have == 0 else f"partly ({have}/{len(repos)} repos)"


def _cmd_download(args) -> int:
    from pintor.registry import get_spec

    spec = get_spec(args.name)
    if spec.embedded:
        print(f"{spec.name} is embedded in the package: nothing to download")
        return 0
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    for repo in spec.hub_repos:
        print(f"downloading {repo} ...", file=sys.stderr)
        try:
            path = snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"],
                                     ignore_patterns=["*.fp16.safetensors"] if spec.family != "diffusers-auto" else None)
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
            raise PintorError(f"cannot download {repo}: the hub can't be reached ({type(e).__name__}); "
                              "check the network, or copy a Hugging Face cache here and set HF_HOME") from None
        print(path)
    return 0


def _cmd_info(args) -> int:
    from pintor.metadata import read_metadata

    meta = read_metadata(args.image)
    if meta["parameters"] is None and meta["pintor"] is None:
        raise PintorError(f"{args.image} carries no pintor or A1111 parameters")
    if args.json:
        print(json.dumps(meta["pintor"], indent=2, sort_keys=True))
        return 0
    if meta["parameters"] is not None:
        print(meta["parameters"])
    if meta["pintor"] is not None:
        print("\npintor:")
        print(json.dumps(meta["pintor"], indent=2, sort_keys=True))
    return 0


def _cmd_data(args) -> int:
    from pintor.data.shapes import write_imagefolder

    if args.n < 1:
        raise PintorError(f"--n must be a positive integer, got {args.n}")
    out = Path(args.out)
    _check_writable(out)
    write_imagefolder(out, args.n, seed=args.seed)
    print(out)
    return 0


# Evaluation draws at the size the judge expects, so it takes every model-default setting but the size.
_EVAL_SETTINGS = tuple(k for k in SETTING_NAMES if k not in ("width", "height"))


def _cmd_eval(args) -> int:
    from pintor.eval.evaluate import EVAL_SEED, EvalConfig, run, selected_prompts
    from pintor.painter import resolve_model
    from pintor.request import GenerationRequest

    if args.n < 1:
        raise PintorError(f"--n must be a positive integer, got {args.n}")
    settings = {k: getattr(args, k) for k in _EVAL_SETTINGS if getattr(args, k) is not None}
    GenerationRequest(prompt="x", **settings).validate()
    seed = EVAL_SEED if args.seed is None else args.seed
    parts = None
    if args.only is not None:
        if args.no_modes:
            raise PintorError("--only and --no-modes both choose what to run; give one")
        parts = tuple(x.strip() for x in args.only.split(",") if x.strip())
    try:
        cfg = EvalConfig(n=args.n, seed=seed, prompts_file=args.prompts, modes=not args.no_modes, parts=parts,
                         settings=settings)
    except ValueError as e:
        raise PintorError(f"--only: {e}") from None
    prompts = selected_prompts(cfg)
    from pintor.eval.stats import judged_prompts

    baseline = _read_baseline(args.baseline) if args.baseline else None
    if baseline is not None and prompts and judged_prompts(baseline) != prompts:
        # Checked before generating anything, so a mismatch costs no run.
        raise PintorError(f"--baseline {args.baseline} judged other prompts: expected a report made with the same "
                          "--n, --seed and --prompts")
    resolve_model(args.model)
    out = Path(args.out)
    _check_writable(out)
    _quiet_libraries()
    report = run(args.model, cfg, out, load_kwargs={"device": args.device}, progress=not args.quiet,
                 baseline=baseline, prompts=prompts)
    print(format_report(report))
    print(out / "eval.json")
    print(out / "contact-sheet.png")
    return 0


def _read_baseline(path: str) -> dict:
    p = Path(path)
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PintorError(f"--baseline {p}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PintorError(f"--baseline {p}: not a readable eval.json ({e})") from None
    if not isinstance(report, dict) or not any("judged" in (report.get(k) or {}) for k in ("prompts", "control", "inpaint")):
        raise PintorError(f"--baseline {p}: no per-case results (prompts.judged, control.judged or inpaint.judged); "
                          "expected an eval.json written by this version of pintor eval")
    return report


def format_report(report: dict) -> str:
    """A short human summary of an eval report."""
    lines = [f"model {report['model']}"]
    prompts = report.get("prompts") or {"accuracy": {}, "counts": {}}
    acc, counts = prompts["accuracy"], prompts["counts"]
    ci = prompts.get("interval95", {})
    for cat, v in acc.items():
        line = f"  {cat:<16} {v:.3f}"
        if cat in ci:
            line += f"  [{ci[cat][0]:.2f}, {ci[cat][1]:.2f}]"
        lines.append(line + (f"  (n={counts[cat]})" if cat in counts else ""))
    if "mixing" in report:
        for kind, m in report["mixing"].items():
            lines.append(f"  mix ({kind} item)  A at w=1 {m['a_at_w1']:.2f}, B at w=0 {m['b_at_w0']:.2f}, "
                         f"monotonic {m['monotonic_cases']:.2f}")
    if "control" in report:
        c = report["control"]
        lines.append(f"  control          correct and within 8 px {c['correct_and_placed']:.2f}")
    if "inpaint" in report:
        i = report["inpaint"]
        lines.append(f"  inpaint          new object correct {i['new_object_correct']:.2f}, "
                     f"outside unchanged {i['outside_unchanged']:.2f}")
    if "variations" in report:
        v = report["variations"]
        line = f"  variations       same caption {v['accuracy']['overall']:.2f}"
        if "movq_round_trip" in v:
            line += f" (MoVQ round trip, their ceiling: {v['movq_round_trip']['overall']:.2f})"
        lines.append(line)
    s = report["speed"]
    lines.append(f"  load {s['load_seconds']:.2f} s, {s['seconds_per_image']:.2f} s per image")
    if "comparison" in report:
        lines.append("against the baseline (same prompts; better / worse: cases only one model got right)")
        for name, r in report["comparison"].items():
            lines.append(f"  {name:<16} {r['this']:.3f} vs {r['baseline']:.3f}  +{r['better']} -{r['worse']}"
                         f"  p={r['p']:.3g}")
    return "\n".join(lines)


def _dispatch(args) -> int:
    if args.command in _MODE_OF:
        return _cmd_generation(args)
    handlers = {"models": _cmd_models, "download": _cmd_download, "info": _cmd_info, "data": _cmd_data,
                "eval": _cmd_eval}
    if args.command in handlers:
        return handlers[args.command](args)
    if args.command == "train":
        from pintor.training.cli import run

        return run(args)
    if args.command == "serve":
        from pintor.server.cli import run as run_server

        return run_server(args)
    if args.command == "bench":
        from pintor.bench.cli import run as run_bench

        return run_bench(args)
    raise PintorError(f"unknown command {args.command!r}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pintor` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except PintorError as e:
        print(f"pintor: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("pintor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pintor models | head`: the reader left; nothing to report
        sys.stderr.close()
        return 0
    except Exception as e:  # the promise is one line, never a traceback; PINTOR_DEBUG=1 shows it
        if os.environ.get("PINTOR_DEBUG"):
            raise
        lines = str(e).strip().splitlines()
        print(f"pintor: error: {type(e).__name__}: {lines[0] if lines else ''} (PINTOR_DEBUG=1 for details)",
              file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
