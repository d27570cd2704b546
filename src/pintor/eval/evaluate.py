"""`pintor eval`: generate shapes-world images and judge them with pintor's own detector.

Categories of text prompts: single seen pairs, single held-out pairs, counts, pairs, relations and named
backgrounds. Modes: mixing (A at w=1, B at w=0, monotonic in between; image and text items), depth
control (objects within 8 px of their place in the depth map) and inpainting (the new object correct,
pixels outside the mask unchanged), variations (the decoder on true image embeddings) with the MoVQ round
trip as their ceiling. Also load time and seconds per image.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pintor.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT,
    SHAPES,
    CaptionSpec,
    caption_for,
    layout_for,
    parse_caption,
    render,
    sample_spec,
)
from pintor.eval.detector import judge
from pintor.eval.stats import wilson_interval
from pintor.host import host_info, versions

CATEGORIES = ("single_seen", "single_held_out", "count", "pair", "relation", "background")
MIX_WEIGHTS = (1.0, 0.75, 0.5, 0.25, 0.0)
PLACEMENT_TOLERANCE = 8.0
EVAL_SEED = 20261125  # prompts drawn from their own stream, apart from the training seeds
PARTS = ("prompts", "mix", "control", "inpaint", "variations")


@dataclass
class EvalConfig:
    """What `pintor eval` runs.

    Args:
        n (`int`): prompts per category, and cases per mode.
        seed (`int`): seed of the prompt draw and of the generations.
        prompts_file (`str`, *optional*): captions, one per line, instead of the default set.
        modes (`bool`): also evaluate mixing, control, inpainting and variations.
        parts (`tuple`, *optional*): only these parts of `PARTS` (e.g. `("control", "inpaint")` to judge a new
            ControlNet or inpaint decoder without the prompts); each part draws its cases from its own stream of
            `seed`, so it judges the same cases alone as in a whole run.
        settings (`dict`): generation settings passed to every call (`steps`, `prior_steps`, `scheduler`...).
    """

    n: int = 24
    seed: int = EVAL_SEED
    prompts_file: str | None = None
    modes: bool = True
    parts: tuple[str, ...] | None = None
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.parts is not None:
            self.parts = tuple(self.parts)
            unknown = [x for x in self.parts if x not in PARTS]
            if unknown or not self.parts:
                raise ValueError(f"parts must be some of {', '.join(PARTS)}, got {', '.join(self.parts) or 'none'}")

    def selected(self) -> tuple[str, ...]:
        """The parts this configuration runs, in `PARTS` order."""
        chosen = self.parts if self.parts is not None else PARTS if self.modes else ("prompts",)
        return tuple(x for x in PARTS if x in chosen)


def category_of(spec: CaptionSpec) -> str:
    """The accuracy category of a caption."""
    if spec.background_named and spec.background != "white":
        return "background"
    if spec.form == "single":
        return "single_held_out" if spec.objects[0] in HELD_OUT else "single_seen"
    return spec.form


def default_prompts(n: int, seed: int = EVAL_SEED) -> list[tuple[str, str]]:
    """`n` (category, caption) prompts for each category, drawn deterministically from `seed`."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str]] = []
    held = sorted(HELD_OUT)
    for i in range(n):
        c, s = held[i % len(held)]
        out.append(("single_held_out", caption_for(CaptionSpec("single", ((c, s),)))))
    for cat, form in (("single_seen", "single"), ("count", "count"), ("pair", "pair"), ("relation", "relation")):
        got = 0
        while got < n:
            spec = sample_spec(rng, form=form)
            # Categories other than "background" keep the default white so each measures one thing.
            spec = CaptionSpec(spec.form, spec.objects, spec.relation)
            out.append((cat, caption_for(spec)))
            got += 1
    for i in range(n):
        spec = sample_spec(rng, form=("single", "pair")[i % 2])
        bg = BACKGROUNDS[1 + i % 2]  # black, gray
        out.append(("background", caption_for(CaptionSpec(spec.form, spec.objects, spec.relation, bg, True))))
    return out


def read_prompts(path: str | Path) -> list[tuple[str, str]]:
    from pintor.errors import PintorError

    p = Path(path)
    if not p.is_file():
        raise PintorError(f"prompts file not found: {p}")
    out = []
    for k, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append((category_of(parse_caption(line)), line))
        except ValueError as e:
            raise PintorError(f"{p}:{k}: not a shapes-world caption: {e}") from None
    if not out:
        raise PintorError(f"prompts file {p} has no captions")
    return out


def selected_prompts(cfg: EvalConfig) -> list[tuple[str, str]]:
    """The (category, caption) prompts `cfg` judges: its file's, or the built-in set; none without "prompts"."""
    if "prompts" not in cfg.selected():
        return []
    return read_prompts(cfg.prompts_file) if cfg.prompts_file else default_prompts(cfg.n, cfg.seed)


@dataclass
class Case:
    """One judged image, for the contact sheet."""

    image: Image.Image
    label: str
    ok: bool | None  # None: nothing to judge (an intermediate mixing weight)
    section: str


def _call(painter, mode, seed, settings, **kw):
    fn = getattr(painter, mode)
    return fn(seed=seed, show_progress=False, **settings, **kw)[0]


def evaluate_prompts(painter, prompts, cfg: EvalConfig, cases: list[Case], bar=None) -> dict:
    per: dict[str, list[bool]] = defaultdict(list)
    failures, judged = [], []
    for i, (cat, caption) in enumerate(prompts):
        img = _call(painter, "generate", cfg.seed + i, cfg.settings, prompt=caption)
        j = judge(img, caption)
        per[cat].append(j.correct)
        judged.append([cat, caption, j.correct])
        cases.append(Case(img, caption, j.correct, cat))
        if not j.correct:
            failures.append({"category": cat, "caption": caption, "reason": j.reason})
        if bar is not None:
            bar.update(1)
    counts = {c: len(v) for c, v in per.items()}
    per["overall"] = [x for v in per.values() for x in v]
    acc = {c: _mean(v) for c, v in per.items()}
    intervals = {c: _interval95(v) for c, v in per.items()}
    return {"accuracy": acc, "interval95": intervals, "counts": counts, "failures": failures, "judged": judged}


def _single_scene(rng, pair):
    spec = CaptionSpec("single", (pair,))
    objs = layout_for(spec, rng)
    image, depth, masks = render(objs, "white")
    return spec, objs, image


def _distinct_pairs(rng, k):
    pairs = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT]
    out = []
    while len(out) < k:
        a, b = (pairs[i] for i in rng.choice(len(pairs), 2, replace=False))
        if a[0] != b[0] and a[1] != b[1]:
            out.append((a, b))
    return out


def evaluate_mixing(painter, cfg: EvalConfig, cases: list[Case], bar=None, weights=MIX_WEIGHTS) -> dict:
    """Mixes image A with image B (and with B's caption) at weights w, 1-w and judges each result.

    Args:
        weights (`tuple[float, ...]`, defaults to `MIX_WEIGHTS`): A's weights, from 1.0 down to 0.0. Each
            call's seed depends only on the case, so `(1.0, 0.0)` gives the same ends for a third of the work.
    """
    if len(weights) < 2 or weights[0] != 1.0 or weights[-1] != 0.0:
        raise ValueError(f"mixing weights must run from 1.0 down to 0.0, got {tuple(weights)}")
    rng = np.random.default_rng(cfg.seed + 1)
    result = {}
    for kind in ("image", "text"):
        labels = []  # per case: list over weights of 1 (judged A), 0 (judged B), 0.5 (neither)
        for k, (pa, pb) in enumerate(_distinct_pairs(rng, cfg.n)):
            spec_a, _, img_a = _single_scene(rng, pa)
            spec_b, _, img_b = _single_scene(rng, pb)
            cap_a, cap_b = caption_for(spec_a), caption_for(spec_b)
            item_b = img_b if kind == "image" else cap_b
            row = []
            for w in weights:
                out = _call(painter, "mix", cfg.seed + k, cfg.settings, items=[img_a, item_b], weights=[w, 1 - w])
                is_a, is_b = judge(out, cap_a).correct, judge(out, cap_b).correct
                row.append(1.0 if is_a else 0.0 if is_b else 0.5)
                if k < 4:
                    ok = is_a if w == 1 else is_b if w == 0 else None
                    cases.append(Case(out, f"{kind} mix w={w:g}: {cap_a} | {cap_b}", ok, f"mix-{kind}"))
                if bar is not None:
                    bar.update(1)
            labels.append(row)
        arr = np.array(labels)
        curve = [float((arr[:, i] == 1).mean()) for i in range(len(weights))]
        monotonic = [bool(np.all(np.diff(r) <= 0)) for r in arr]
        result[kind] = {
            "a_at_w1": float((arr[:, 0] == 1).mean()),
            "b_at_w0": float((arr[:, -1] == 0).mean()),
            "fraction_judged_a_by_weight": dict(zip(map(str, weights), curve, strict=True)),
            "monotonic_cases": float(np.mean(monotonic)),
            "curve_monotonic": bool(np.all(np.diff(curve) <= 0)),
        }
    return result


def _placed(detection, objects) -> bool:
    used = set()
    for obj in objects:
        best, best_d = None, None
        for i, d in enumerate(detection.objects):
            if i in used or (d.colour, d.shape) != (obj.colour, obj.shape):
                continue
            dist = float(np.hypot(d.centre[0] - obj.centre[0], d.centre[1] - obj.centre[1]))
            if best_d is None or dist < best_d:
                best, best_d = i, dist
        if best is None or best_d > PLACEMENT_TOLERANCE:
            return False
        used.add(best)
    return True


def evaluate_control(painter, cfg: EvalConfig, cases: list[Case], bar=None) -> dict:
    """Draws depth maps of known layouts and checks each named object lands within 8 px of its place."""
    rng = np.random.default_rng(cfg.seed + 2)
    ok_all, judged, placed = [], [], []
    for k in range(cfg.n):
        spec = sample_spec(rng, form=("single", "pair", "relation")[k % 3])
        spec = CaptionSpec(spec.form, spec.objects, spec.relation)
        objs = layout_for(spec, rng)
        _, depth, _ = render(objs, "white")
        caption = caption_for(spec)
        out = _call(painter, "control", cfg.seed + k, cfg.settings, hint=depth, prompt=caption)
        j = judge(out, caption)
        p = _placed(j.detection, objs)
        judged.append(j.correct)
        placed.append(p)
        ok_all.append(j.correct and p)
        cases.append(Case(out, f"control: {caption}", j.correct and p, "control"))
        if bar is not None:
            bar.update(1)
    return {"correct_and_placed": _mean(ok_all), "judged_correct": _mean(judged), "placed_within_8px": _mean(placed),
            "interval95": _interval95(ok_all), "judged": ok_all}


def evaluate_inpaint(painter, cfg: EvalConfig, cases: list[Case], bar=None) -> dict:
    """Replaces one object of a scene by a new one through a mask; the prompt describes the new scene."""
    rng = np.random.default_rng(cfg.seed + 3)
    pairs = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT]
    correct, kept = [], []
    for k in range(cfg.n):
        spec = sample_spec(rng, form=("single", "pair")[k % 2])
        spec = CaptionSpec(spec.form, spec.objects, spec.relation)
        objs = layout_for(spec, rng)
        image, _, _ = render(objs, "white")
        target = int(rng.integers(len(objs)))
        choices = [p for p in pairs if p not in spec.objects]
        new = choices[int(rng.integers(len(choices)))]
        new_objects = tuple(new if i == target else o for i, o in enumerate(spec.objects))
        new_caption = caption_for(CaptionSpec(spec.form, new_objects, spec.relation))
        mask = np.zeros((image.height, image.width), np.uint8)
        x0, y0, x1, y1 = objs[target].box
        mask[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = 255
        out = _call(painter, "inpaint", cfg.seed + k, cfg.settings, image=image, mask=mask, prompt=new_caption)
        outside = mask == 0
        same = bool(np.array_equal(np.asarray(out)[outside], np.asarray(image)[outside]))
        ok = judge(out, new_caption).correct
        correct.append(ok)
        kept.append(same)
        cases.append(Case(out, f"inpaint: {new_caption}", ok and same, "inpaint"))
        if bar is not None:
            bar.update(1)
    return {"new_object_correct": _mean(correct), "outside_unchanged": _mean(kept),
            "interval95": _interval95(correct), "judged": correct}


FORMS = ("single", "count", "pair", "relation")


def _form_scenes(cfg: EvalConfig, offset: int):
    """`cfg.n` scenes per caption form (backgrounds drawn as in training, held-out pairs allowed)."""
    rng = np.random.default_rng(cfg.seed + offset)
    for form in FORMS:
        for k in range(cfg.n):
            spec = sample_spec(rng, form=form, allow_held_out=True)
            image, _, _ = render(layout_for(spec, rng), spec.background)
            yield form, k, caption_for(spec), image


def movq_decode(movq, latents) -> np.ndarray:
    """The first of `latents` decoded by a MoVQ (`VQModel`) the way the pipelines decode latents, as uint8 RGB."""
    import torch

    with torch.no_grad():
        rec = movq.decode(latents, force_not_quantize=True).sample
    return ((rec[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def movq_round_trip(movq, image) -> np.ndarray:
    """`image` encoded and decoded by a MoVQ (`VQModel`) the way the pipelines decode latents, as uint8 RGB."""
    import torch

    p = next(movq.parameters())
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        latents = movq.encode(x.to(p.device, p.dtype)).latents
    return movq_decode(movq, latents)


def evaluate_variations(painter, cfg: EvalConfig, cases: list[Case], bar=None) -> dict:
    """Variations of rendered scenes (image -> CLIP image embedding -> decoder), judged against the scene's caption.

    With no prior in the way this is the decoder's own accuracy on true image embeddings, and the MoVQ
    round trip (encode, decode) of the same scenes is the ceiling of everything the decoders paint.
    """
    movq = painter.components.get("movq")
    per, ceiling = defaultdict(list), defaultdict(list)
    for form, k, caption, image in _form_scenes(cfg, 4):
        out = _call(painter, "variations", cfg.seed + k, cfg.settings, image=image)
        ok = judge(out, caption).correct
        per[form].append(ok)
        if k < 2:
            cases.append(Case(out, f"variation: {caption}", ok, "variations"))
        if movq is not None:
            ceiling[form].append(judge(movq_round_trip(movq, image), caption).correct)
        if bar is not None:
            bar.update(1)
    result = {"accuracy": {f: _mean(v) for f, v in per.items()}}
    result["accuracy"]["overall"] = _mean([x for v in per.values() for x in v])
    if ceiling:
        result["movq_round_trip"] = {f: _mean(v) for f, v in ceiling.items()}
        result["movq_round_trip"]["overall"] = _mean([x for v in ceiling.values() for x in v])
    return result


def measure_speed(model, load_kwargs, settings, repeats: int = 5) -> dict:
    """Load time of a fresh `pintor.load`, and median seconds per image at default settings after a warm-up."""
    import pintor

    t0 = time.perf_counter()
    painter = pintor.load(model, **load_kwargs)
    load_s = time.perf_counter() - t0
    painter.generate("a red circle", seed=0, show_progress=False, **settings)
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        painter.generate("a blue square above a green circle", seed=i, show_progress=False, **settings)
        times.append(time.perf_counter() - t)
    return {"load_seconds": round(load_s, 3), "seconds_per_image": round(statistics.median(times), 3),
            "image_size": [painter.defaults.get("width"), painter.defaults.get("height")]}


def run(model=None, cfg: EvalConfig | None = None, out_dir: str | Path = "eval", *, load_kwargs=None,
        progress: bool = True, baseline: dict | None = None, prompts: list[tuple[str, str]] | None = None) -> dict:
    """Runs the whole evaluation, writes `eval.json` and `contact-sheet.png` into `out_dir`, returns the report.

    With `baseline` (an earlier report over the same prompts) the report also holds `comparison`, the paired
    test of `pintor.eval.stats.compare_reports`. `prompts`, the (category, caption) list that `cfg` names
    (`selected_prompts(cfg)`), skips reading it again when the caller already has it.
    """
    from tqdm.auto import tqdm

    import pintor

    cfg = cfg or EvalConfig()
    load_kwargs = load_kwargs or {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = cfg.selected()
    if prompts is None:
        prompts = selected_prompts(cfg)
    speed = measure_speed(model, load_kwargs, cfg.settings)
    painter = pintor.load(model, **load_kwargs)
    # A model without a mode (no ControlNet, say) is judged on the rest.
    modes = [m for m in parts if m in painter.modes]
    units = {"mix": 2 * len(MIX_WEIGHTS) * cfg.n, "control": cfg.n, "inpaint": cfg.n, "variations": len(FORMS) * cfg.n}
    mode_units = sum(units[m] for m in modes)
    cases: list[Case] = []
    report = {"model": painter.spec.name, "config": asdict(cfg), "speed": speed}
    with tqdm(total=len(prompts) + mode_units, desc="eval", disable=not progress, dynamic_ncols=True) as bar:
        if prompts:
            report["prompts"] = evaluate_prompts(painter, prompts, cfg, cases, bar)
        if "mix" in modes:
            report["mixing"] = evaluate_mixing(painter, cfg, cases, bar)
        if "control" in modes:
            report["control"] = evaluate_control(painter, cfg, cases, bar)
        if "inpaint" in modes:
            report["inpaint"] = evaluate_inpaint(painter, cfg, cases, bar)
        if "variations" in modes:
            report["variations"] = evaluate_variations(painter, cfg, cases, bar)
    report["host"] = host_info(painter.device)
    report["versions"] = versions()
    if baseline is not None:
        from pintor.eval.stats import compare_reports

        report["comparison"] = compare_reports(report, baseline)
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    contact_sheet(cases).save(out_dir / "contact-sheet.png")
    return report


def _interval95(v) -> list[float]:
    """The 95% Wilson interval of a list of right / wrong judgments, as the reports store it."""
    return [round(x, 3) for x in wilson_interval(sum(v), len(v))]


def _mean(v) -> float:
    return float(np.mean(v)) if len(v) else float("nan")


def contact_sheet(cases: list[Case], per_section: int = 8, tile: int = 128) -> Image.Image:
    """A grid: one row per section (category or mode), up to `per_section` images, each marked ✓ or ✗."""
    from PIL import ImageDraw

    sections: dict[str, list[Case]] = {}
    for c in cases:
        sections.setdefault(c.section, [])
        if len(sections[c.section]) < per_section:
            sections[c.section].append(c)
    label_w, cap_h, pad = 120, 28, 4
    width = label_w + per_section * (tile + pad)
    height = max(1, len(sections)) * (tile + cap_h + pad) + pad
    sheet = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    font = _font(11)
    for r, (name, row) in enumerate(sections.items()):
        y = pad + r * (tile + cap_h + pad)
        draw.text((6, y + tile // 2 - 6), name.replace("_", " "), fill=(0, 0, 0), font=font)
        for i, c in enumerate(row):
            x = label_w + i * (tile + pad)
            sheet.paste(c.image.convert("RGB").resize((tile, tile)), (x, y))
            if c.ok is not None:
                _mark(draw, x + tile - 22, y + 4, c.ok)
            for k, line in enumerate(_wrap(c.label, 24)[:2]):
                draw.text((x, y + tile + 2 + 12 * k), line, fill=(40, 40, 40), font=font)
    return sheet


def _mark(draw, x, y, ok: bool) -> None:
    # Drawn, not typed: the default bitmap font has no ✓ / ✗ glyphs.
    colour = (20, 150, 40) if ok else (210, 30, 30)
    draw.ellipse((x, y, x + 18, y + 18), fill=(255, 255, 255), outline=colour, width=2)
    if ok:
        draw.line((x + 4, y + 9, x + 8, y + 13, x + 14, y + 5), fill=colour, width=3)
    else:
        draw.line((x + 5, y + 5, x + 13, y + 13), fill=colour, width=3)
        draw.line((x + 13, y + 5, x + 5, y + 13), fill=colour, width=3)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _wrap(text: str, width: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > width and cur:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    if cur:
        lines.append(cur)
    return lines
