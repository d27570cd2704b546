"""The synthetic shapes world: captions, layouts, rendering and image-folder datasets.

Every sample follows the shapes-world specification: a 128 x 128 flat background (white, black or
gray), one to four flat-coloured shapes (circle, square, triangle, star) of side 24..40 px that never
overlap, a caption in a small fixed grammar, an 8-bit depth map and one inpainting mask per object.
Four colour-shape pairs (`HELD_OUT`) are kept out of training data so that prompts with them test
composition. The constants live here so the package never needs the specification at run time.

`ShapesGenerator(seed).sample(i)` is deterministic per `(seed, i)`, so datasets
can be regenerated exactly and in any order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .vocabulary import BACKGROUNDS, COLOURS, NUMBERS, RELATIONS, SHAPES

CANVAS = 128
MIN_SIZE, MAX_SIZE = 24, 40
MARGIN = 4  # boxes lie at least this far inside the canvas
GAP = 4  # and at least this far apart from each other
RELATION_DISTANCE = 24  # box centres of a relation are at least this far apart along its axis
STAR_INNER_RATIO = 0.45
MIN_DEPTH, MAX_DEPTH = 128, 255

BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 20),
    "yellow": (245, 215, 30),
    "green": (30, 170, 60),
    "blue": (30, 90, 230),
    "purple": (150, 50, 190),
}
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {("red", "star"), ("blue", "triangle"), ("green", "square"), ("yellow", "circle")}
)
FORMS = ("single", "count", "pair", "relation")
COUNTS = {"two": 2, "three": 3, "four": 4}
COUNT_WORDS = {v: k for k, v in COUNTS.items()}

# Sampling mix: single / count / pair / relation, and how often the caption names the background.
FORM_WEIGHTS = (0.30, 0.20, 0.25, 0.25)
P_UNNAMED_BACKGROUND = 0.4  # otherwise one of BACKGROUNDS, uniformly (so "on a white background" too)

assert set(COLOURS) == set(COLOUR_RGB) and set(BACKGROUNDS) == set(BACKGROUND_RGB)
assert set(NUMBERS) == set(COUNTS)


# --------------------------------------------------------------------------------------------------
# Objects and captions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeObject:
    """One shape on the canvas.

    Args:
        colour: a palette colour name (`COLOUR_RGB`).
        shape: one of `SHAPES`.
        x, y: top-left corner of the shape's square box, in pixels (y grows downwards).
        size: side `s` of the box, 24..40 px.
        depth: the object's constant value in the depth map, 128..255 (nearer is brighter).
    """

    colour: str
    shape: str
    x: int
    y: int
    size: int
    depth: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """`(x0, y0, x1, y1)` of the box, end-exclusive."""
        return (self.x, self.y, self.x + self.size, self.y + self.size)

    @property
    def centre(self) -> tuple[float, float]:
        """`(cx, cy)` of the box."""
        return (self.x + self.size / 2, self.y + self.size / 2)


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption says, independent of its wording.

    Args:
        form: `"single"`, `"count"`, `"pair"` or `"relation"`.
        objects: `(colour, shape)` of each named object, in caption order; a count repeats one pair.
        relation: one of `RELATIONS` for the relation form, else `None`. The first object is
            `relation` the second.
        background: the background the image has (`"white"` when the caption names none).
        background_named: whether the caption ends with `" on a {background} background"`.
    """

    form: str
    objects: tuple[tuple[str, str], ...]
    relation: str | None = None
    background: str = "white"
    background_named: bool = False

    def __post_init__(self):
        _check_spec(self)


def _check_spec(spec: CaptionSpec) -> None:
    n = len(spec.objects)
    if spec.form not in FORMS:
        raise ValueError(f"unknown caption form {spec.form!r}; expected one of {FORMS}")
    for colour, shape in spec.objects:
        if colour not in COLOUR_RGB:
            raise ValueError(f"unknown colour {colour!r}; expected one of {COLOURS}")
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    expected = {"single": (1,), "count": (2, 3, 4), "pair": (2,), "relation": (2,)}[spec.form]
    if n not in expected:
        raise ValueError(f"a {spec.form} caption names {expected} objects, got {n}")
    if spec.form == "count" and len(set(spec.objects)) != 1:
        raise ValueError("a count caption's objects must all be the same colour and shape")
    if (spec.relation is not None) != (spec.form == "relation"):
        raise ValueError("a relation is given exactly for the relation form")
    if spec.relation is not None and spec.relation not in RELATIONS:
        raise ValueError(f"unknown relation {spec.relation!r}; expected one of {RELATIONS}")
    if spec.background not in BACKGROUND_RGB:
        raise ValueError(f"unknown background {spec.background!r}; expected one of {BACKGROUNDS}")
    if not spec.background_named and spec.background != "white":
        raise ValueError("a caption that names no background means white")


def _noun(colour: str, shape: str) -> str:
    return f"{'an' if colour == 'orange' else 'a'} {colour} {shape}"


def caption_for(spec: CaptionSpec) -> str:
    """Writes the caption for `spec` in the exact shapes-world grammar.

    `parse_caption(caption_for(spec)) == spec` for every valid spec.
    """
    if spec.form == "single":
        text = _noun(*spec.objects[0])
    elif spec.form == "count":
        colour, shape = spec.objects[0]
        text = f"{COUNT_WORDS[len(spec.objects)]} {colour} {shape}s"
    elif spec.form == "pair":
        text = f"{_noun(*spec.objects[0])} and {_noun(*spec.objects[1])}"
    else:
        text = f"{_noun(*spec.objects[0])} {spec.relation} {_noun(*spec.objects[1])}"
    if spec.background_named:
        text += f" on a {spec.background} background"
    return text


_GRAMMAR = (
    "'a {colour} {shape}', '{two|three|four} {colour} {shape}s', 'a {c1} {s1} and a {c2} {s2}' or "
    "'a {c1} {s1} {relation} a {c2} {s2}', optionally followed by ' on a {background} background'"
)


def _parse_noun(words: list[str], i: int, text: str) -> tuple[tuple[str, str], int]:
    if len(words) < i + 3:
        raise ValueError(f"caption {text!r} ends early: expected 'a {{colour}} {{shape}}' after word {i}")
    article, colour, shape = words[i : i + 3]
    if colour not in COLOUR_RGB:
        raise ValueError(f"caption {text!r}: {colour!r} is not a colour; expected one of {COLOURS}")
    if shape not in SHAPES:
        raise ValueError(f"caption {text!r}: {shape!r} is not a shape; expected one of {SHAPES}")
    want = "an" if colour == "orange" else "a"
    if article != want:
        raise ValueError(f"caption {text!r}: expected article {want!r} before {colour!r}, got {article!r}")
    return (colour, shape), i + 3


def named_background(text: str) -> str:
    """The background a caption names at its end (`"... on a gray background"`, in any case and spacing), or
    `"white"` when it names none. Unlike `parse_caption` it reads any text, shapes-world grammar or not."""
    words = text.lower().split()
    return words[-2] if len(words) >= 4 and words[-4:-2] == ["on", "a"] and words[-1] == "background" else "white"


def parse_caption(text: str) -> CaptionSpec:
    """Parses a shapes-world caption.

    Surrounding and repeated whitespace and upper case are tolerated; anything else outside the grammar
    raises `ValueError` saying what is wrong. Held-out pairs parse like any other.

    Args:
        text: e.g. `"an orange star to the left of a blue circle on a gray background"`.

    Returns:
        The `CaptionSpec`; `caption_for` gives the canonical text back.
    """
    if not isinstance(text, str):
        raise TypeError(f"a caption is a str, got {type(text).__name__}")
    words = text.lower().split()
    if not words:
        raise ValueError(f"empty caption; expected {_GRAMMAR}")
    background, named = "white", False
    if len(words) >= 4 and words[-4:-2] == ["on", "a"] and words[-1] == "background":
        background, named = words[-2], True
        if background not in BACKGROUND_RGB:
            raise ValueError(
                f"caption {text!r}: {background!r} is not a background; expected one of {BACKGROUNDS}"
            )
        words = words[:-4]
    elif "background" in words or "on" in words:
        raise ValueError(
            f"caption {text!r}: a background is named as ' on a {{background}} background' at the end"
        )

    if words and words[0] in COUNTS:
        if len(words) != 3:
            raise ValueError(
                f"caption {text!r}: a count caption is '{{two|three|four}} {{colour}} {{shape}}s'"
            )
        number, colour, plural = words
        if colour not in COLOUR_RGB:
            raise ValueError(f"caption {text!r}: {colour!r} is not a colour; expected one of {COLOURS}")
        if not (plural.endswith("s") and plural[:-1] in SHAPES):
            raise ValueError(
                f"caption {text!r}: {plural!r} is not a plural shape; expected one of {SHAPES} + 's'"
            )
        objects = ((colour, plural[:-1]),) * COUNTS[number]
        return CaptionSpec("count", objects, None, background, named)

    if not words or words[0] not in ("a", "an"):
        raise ValueError(f"caption {text!r} is outside the grammar; expected {_GRAMMAR}")
    first, i = _parse_noun(words, 0, text)
    rest = words[i:]
    if not rest:
        return CaptionSpec("single", (first,), None, background, named)
    if rest[0] == "and":
        second, j = _parse_noun(words, i + 1, text)
        form, relation = "pair", None
    else:
        relation = next((r for r in RELATIONS if rest[: len(r.split())] == r.split()), None)
        if relation is None:
            raise ValueError(
                f"caption {text!r}: expected 'and' or a relation ({', '.join(RELATIONS)}) after the first object"
            )
        second, j = _parse_noun(words, i + len(relation.split()), text)
        form = "relation"
    if j != len(words):
        raise ValueError(f"caption {text!r}: unexpected words {' '.join(words[j:])!r} at the end")
    return CaptionSpec(form, (first, second), relation, background, named)


def sample_spec(
    rng: np.random.Generator, *, allow_held_out: bool = False, form: str | None = None
) -> CaptionSpec:
    """Draws a random caption spec.

    Forms are mixed single 30%, count 20%, pair 25%, relation 25%. 40% of captions name no background
    (white); the others name white, black or gray uniformly. Pairs and relations name two different
    colour-shape pairs, so matching detections to caption objects is never ambiguous.

    Args:
        rng: the random generator to draw from.
        allow_held_out: whether `HELD_OUT` colour-shape pairs may appear (never, by default).
        form: force one form instead of the mix.
    """
    if form is None:
        form = FORMS[int(rng.choice(len(FORMS), p=FORM_WEIGHTS))]
    elif form not in FORMS:
        raise ValueError(f"unknown caption form {form!r}; expected one of {FORMS}")
    pairs = [(c, s) for c in COLOURS for s in SHAPES if allow_held_out or (c, s) not in HELD_OUT]
    if form == "single":
        objects = (pairs[int(rng.integers(len(pairs)))],)
    elif form == "count":
        objects = (pairs[int(rng.integers(len(pairs)))],) * int(rng.integers(2, 5))
    else:
        i, j = rng.choice(len(pairs), size=2, replace=False)
        objects = (pairs[int(i)], pairs[int(j)])
    relation = RELATIONS[int(rng.integers(len(RELATIONS)))] if form == "relation" else None
    if rng.random() < P_UNNAMED_BACKGROUND:
        background, named = "white", False
    else:
        background, named = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], True
    return CaptionSpec(form, objects, relation, background, named)


# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------


def _apart(a: tuple[int, int, int], b: tuple[int, int, int], gap: int = GAP) -> bool:
    # (x, y, s) boxes are apart when some axis leaves at least `gap` empty pixels between them.
    (ax, ay, as_), (bx, by, bs) = a, b
    return ax + as_ + gap <= bx or bx + bs + gap <= ax or ay + as_ + gap <= by or by + bs + gap <= ay


def relation_holds(
    first: tuple[float, float], second: tuple[float, float], relation: str, margin: float
) -> bool:
    """Whether box centre `first` is `relation` box centre `second` by at least `margin` px.

    y grows downwards, so "above" means a smaller y.
    """
    (x1, y1), (x2, y2) = first, second
    if relation == "to the left of":
        return x1 + margin <= x2
    if relation == "to the right of":
        return x1 >= x2 + margin
    if relation == "above":
        return y1 + margin <= y2
    if relation == "below":
        return y1 >= y2 + margin
    raise ValueError(f"unknown relation {relation!r}; expected one of {RELATIONS}")


def layout_for(spec: CaptionSpec, rng: np.random.Generator, *, max_tries: int = 200) -> list[ShapeObject]:
    """Places the objects `spec` names at random, following every rule of the shapes world.

    Sides are 24..40 px, boxes lie at least 4 px inside the canvas and at least 4 px apart, and for a
    relation the first box centre is at least 24 px from the second's in the named direction. Each
    object gets a distinct depth in 128..255. Placement is rejection sampling; late tries use smaller
    shapes so a layout is always found.

    Args:
        spec: what to place.
        rng: the random generator to draw from.
        max_tries: how many whole layouts to try before giving up (`RuntimeError`).
    """
    n = len(spec.objects)
    for attempt in range(max_tries):
        # Crowded layouts (four big shapes) can fail; shrinking the largest allowed side guarantees success.
        hi = MAX_SIZE if attempt < max_tries // 2 else MIN_SIZE + (MAX_SIZE - MIN_SIZE) // 2
        boxes: list[tuple[int, int, int]] = []
        for i in range(n):
            s = int(rng.integers(MIN_SIZE, hi + 1))
            for _ in range(50):
                x = int(rng.integers(MARGIN, CANVAS - MARGIN - s + 1))
                y = int(rng.integers(MARGIN, CANVAS - MARGIN - s + 1))
                if not all(_apart((x, y, s), b) for b in boxes):
                    continue
                if spec.relation is not None and i == 1:
                    fx, fy, fs = boxes[0]
                    c1, c2 = (fx + fs / 2, fy + fs / 2), (x + s / 2, y + s / 2)
                    if not relation_holds(c1, c2, spec.relation, RELATION_DISTANCE):
                        continue
                boxes.append((x, y, s))
                break
            else:
                break
        if len(boxes) == n:
            depths = rng.choice(np.arange(MIN_DEPTH, MAX_DEPTH + 1), size=n, replace=False)
            return [
                ShapeObject(c, sh, x, y, s, int(d))
                for (c, sh), (x, y, s), d in zip(spec.objects, boxes, depths, strict=True)
            ]
    raise RuntimeError(f"could not lay out {caption_for(spec)!r} in {max_tries} tries")


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------

SUPERSAMPLE = 4  # sub-pixel samples per axis: edges are anti-aliased, interiors stay exact palette colours


def _star_vertices(cx: float, cy: float, outer: float) -> np.ndarray:
    # Ten vertices alternating outer and inner radius, the first pointing straight up (y grows down).
    angles = np.arange(10) * (math.pi / 5)
    radii = np.where(np.arange(10) % 2 == 0, outer, outer * STAR_INNER_RATIO)
    return np.stack([cx + radii * np.sin(angles), cy - radii * np.cos(angles)], axis=1)


def _in_polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    # Even-odd crossing test, vectorised over points.
    inside = np.zeros(u.shape, dtype=bool)
    n = len(vertices)
    for k in range(n):
        (xa, ya), (xb, yb) = vertices[k], vertices[(k + 1) % n]
        if ya == yb:
            continue
        crosses = (ya > v) != (yb > v)
        x_at = xa + (v - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (u < x_at)
    return inside


def shape_inside(shape: str, x: float, y: float, s: float, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points `(u, v)` (continuous canvas coordinates) lie in `shape` drawn in box `(x, y, s)`."""
    cx, cy, r = x + s / 2, y + s / 2, s / 2
    if shape == "circle":
        return (u - cx) ** 2 + (v - cy) ** 2 <= r * r
    if shape == "square":
        return (u >= x) & (u <= x + s) & (v >= y) & (v <= y + s)
    if shape == "triangle":
        return _in_polygon(u, v, np.array([(cx, y), (x + s, y + s), (x, y + s)]))
    if shape == "star":
        return _in_polygon(u, v, _star_vertices(cx, cy, r))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _coverage(obj: ShapeObject, size: int) -> tuple[tuple[int, int], np.ndarray]:
    # Fraction of each output pixel that the shape covers, over the pixels around its box only.
    k = size / CANVAS
    x0, y0 = max(0, math.floor(obj.x * k)), max(0, math.floor(obj.y * k))
    x1, y1 = min(size, math.ceil((obj.x + obj.size) * k)), min(size, math.ceil((obj.y + obj.size) * k))
    f = SUPERSAMPLE
    us = (x0 + (np.arange((x1 - x0) * f) + 0.5) / f) / k
    vs = (y0 + (np.arange((y1 - y0) * f) + 0.5) / f) / k
    u, v = np.meshgrid(us, vs)
    inside = shape_inside(obj.shape, obj.x, obj.y, obj.size, u, v)
    cover = inside.reshape(y1 - y0, f, x1 - x0, f).mean(axis=(1, 3))
    return (x0, y0), cover


def render(
    objects: list[ShapeObject], background: str, size: int = CANVAS
) -> tuple[Image.Image, Image.Image, list[Image.Image]]:
    """Draws a shapes-world scene.

    Edges are anti-aliased by 4x4 supersampling; pixels fully inside a shape are exactly its palette colour.
    An object's pixels (for the depth map and masks) are those it covers at least half of.

    Args:
        objects: the shapes, in canvas (128 px) coordinates.
        background: a `BACKGROUND_RGB` name.
        size: output side in pixels; coordinates are scaled by `size / 128`.

    Returns:
        `(image, depth, masks)`: the RGB image; the 8-bit depth map (background 0, each object its
        `depth` over its pixels); one 8-bit mask per object (255 on its pixels, else 0).
    """
    if background not in BACKGROUND_RGB:
        raise ValueError(f"unknown background {background!r}; expected one of {BACKGROUNDS}")
    bg = np.array(BACKGROUND_RGB[background], dtype=np.float64)
    rgb = np.broadcast_to(bg, (size, size, 3)).copy()
    depth = np.zeros((size, size), dtype=np.uint8)
    masks = []
    for obj in objects:
        if obj.colour not in COLOUR_RGB:
            raise ValueError(f"unknown colour {obj.colour!r}; expected one of {COLOURS}")
        (x0, y0), cover = _coverage(obj, size)
        h, w = cover.shape
        colour = np.array(COLOUR_RGB[obj.colour], dtype=np.float64)
        # Objects never overlap, so blending each over the background is exact.
        region = rgb[y0 : y0 + h, x0 : x0 + w]
        region += (colour - bg) * cover[..., None]
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[y0 : y0 + h, x0 : x0 + w] = np.where(cover >= 0.5, 255, 0)
        depth[mask > 0] = obj.depth
        masks.append(Image.fromarray(mask, mode="L"))
    image = Image.fromarray(np.rint(rgb).clip(0, 255).astype(np.uint8), mode="RGB")
    return image, Image.fromarray(depth, mode="L"), masks


# --------------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One shapes-world sample: an image, its caption, depth map, masks and the scene it shows."""

    image: Image.Image
    caption: str
    depth: Image.Image
    masks: list[Image.Image]
    objects: list[ShapeObject]
    background: str
    spec: CaptionSpec


def make_sample(spec: CaptionSpec, rng: np.random.Generator) -> Sample:
    """Lays out and renders a sample showing exactly what `spec` says."""
    objects = layout_for(spec, rng)
    image, depth, masks = render(objects, spec.background)
    return Sample(image, caption_for(spec), depth, masks, objects, spec.background, spec)


class ShapesGenerator:
    """A deterministic stream of shapes-world samples.

    `sample(i)` depends only on `(seed, i)`, not on what was generated before, so datasets can be
    rebuilt exactly, split, or generated in parallel.

    Args:
        seed: the stream's seed.
        allow_held_out: whether `HELD_OUT` colour-shape pairs may appear (never, by default).
    """

    def __init__(self, seed: int = 0, *, allow_held_out: bool = False):
        self.seed = int(seed)
        self.allow_held_out = allow_held_out

    def rng(self, index: int) -> np.random.Generator:
        """The fresh random generator for sample `index`."""
        if index < 0:
            raise IndexError(f"sample index must be >= 0, got {index}")
        return np.random.default_rng([self.seed, int(index)])

    def sample(self, index: int) -> Sample:
        """Sample number `index` of this stream."""
        rng = self.rng(index)
        return make_sample(sample_spec(rng, allow_held_out=self.allow_held_out), rng)

    def __iter__(self) -> Iterator[Sample]:
        index = 0
        while True:
            yield self.sample(index)
            index += 1

    def take(self, n: int) -> list[Sample]:
        """Samples `0..n-1`."""
        return [self.sample(i) for i in range(n)]


# --------------------------------------------------------------------------------------------------
# Image-folder datasets
# --------------------------------------------------------------------------------------------------


def write_imagefolder(
    out_dir: str | Path, n: int, *, seed: int = 0, allow_held_out: bool = False, progress: bool = True
) -> Path:
    """Writes samples `0..n-1` of `ShapesGenerator(seed)` as a Hugging Face "imagefolder" dataset.

    Layout: `images/00000.png ...`, `depth/00000.png ...` and `metadata.jsonl`, one JSON object per line
    with `file_name`, `text` (the caption), `depth_file`, `background` and `objects` (colour, shape, x, y,
    size, depth of each).

    Args:
        out_dir: the dataset folder (created if needed).
        n: number of samples.
        seed: the generator's seed.
        allow_held_out: whether `HELD_OUT` colour-shape pairs may appear.
        progress: show a tqdm progress bar.

    Returns:
        The dataset folder.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(max(n - 1, 0))))
    gen = ShapesGenerator(seed, allow_held_out=allow_held_out)
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as f:
        for i in tqdm(range(n), desc="shapes", disable=not progress):
            sample = gen.sample(i)
            name = f"{i:0{width}d}.png"
            sample.image.save(out / "images" / name)
            sample.depth.save(out / "depth" / name)
            record = {
                "file_name": f"images/{name}",
                "text": sample.caption,
                "depth_file": f"depth/{name}",
                "background": sample.background,
                "objects": [
                    {
                        "colour": o.colour,
                        "shape": o.shape,
                        "x": o.x,
                        "y": o.y,
                        "size": o.size,
                        "depth": o.depth,
                    }
                    for o in sample.objects
                ],
            }
            f.write(json.dumps(record) + "\n")
    return out


def read_imagefolder(folder: str | Path) -> list[dict]:
    """Reads the records of an image-folder dataset (a folder with `metadata.jsonl`).

    Each line needs `file_name` (relative to the folder) and `text`; other fields are kept as they are.
    Every record gets `path`, the resolved image path, and `depth_path` when it has `depth_file`.

    Raises:
        ValueError: the folder or `metadata.jsonl` is missing, a line is not a JSON object, lacks
            `file_name` or `text`, or names an image that does not exist.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist")
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise ValueError(f"image folder {str(root)!r} has no metadata.jsonl")
    records = []
    with open(meta, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{meta}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object")
            for key in ("file_name", "text"):
                if not isinstance(record.get(key), str):
                    raise ValueError(f"{where}: missing string field {key!r}")
            path = (root / record["file_name"]).resolve()
            if not path.is_file():
                raise ValueError(f"{where}: image {record['file_name']!r} does not exist")
            record["path"] = path
            if isinstance(record.get("depth_file"), str):
                record["depth_path"] = (root / record["depth_file"]).resolve()
            records.append(record)
    return records
