"""Pintor's shapes-world detector: reads an image back into background and objects and judges it.

It follows the shapes-world specification's "How an image is judged" and knows nothing of any model:

- Background: each pixel of the 2-pixel border votes for its nearest background colour; the most
  common wins (voting per pixel rather than counting exact colours keeps noisy images readable).
- Objects: a pixel belongs to a palette colour when it is at least half way from the background to
  that colour, within `COLOUR_THRESHOLD` (RGB distance) of the line between them, and nearer that
  line than any other colour's. This is "near a palette colour, not the background" made tolerant of
  anti-aliased, blurred and noisy edges: it keeps exactly the pixels an object covers at least half
  of. Pixels of one colour are grouped into 8-connected components; components under 40 pixels are
  noise.
- Shape: the nearest prototype in (fill ratio of the component's bounding box, height of its centre
  of mass in the box): circle ~0.79 and centred, square ~1.0, triangle ~0.5 with the centre of mass
  2/3 down, star ~0.38 with it a little below the middle. A lone outermost row or column of stray
  edge pixels is left out of the box first (see `_shape_features`).
- A caption is satisfied when the objects are exactly the named ones (colour, shape and count), the
  relation holds between bounding-box centres by at least `RELATION_MARGIN` px, and the background
  matches (white when unnamed).

Images are judged at 128 x 128; other sizes are resized to that first, so the 40-pixel noise floor and
the relation margin keep their meaning.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..data.shapes import BACKGROUND_RGB, CANVAS, COLOUR_RGB, parse_caption, relation_holds

MIN_AREA = 40
BORDER = 2
# How far a pixel may lie from the background-to-colour line: wide enough for off-palette generated
# colours and noise, narrow enough that a gray patch on white (74 from the green line) is no object.
COLOUR_THRESHOLD = 60.0
# The relation must hold by this much: "to the left of" means c1.x + 8 <= c2.x. Rendered scenes keep
# centres >= 24 px apart (a star's box centre moves < 2 px), so correct images pass with room to spare
# while side-by-side or overlapping objects do not count as a relation.
RELATION_MARGIN = 8.0

_PALETTE = tuple(COLOUR_RGB)
_BACKGROUNDS = tuple(BACKGROUND_RGB)
_PALETTE_RGB = np.array(list(COLOUR_RGB.values()), dtype=np.float32)
_BG_RGB = np.array(list(BACKGROUND_RGB.values()), dtype=np.float32)

# Shape prototypes in (fill ratio, centre-of-mass height in the box as a fraction), measured on exact
# shapes: a disc fills pi/4 of its box, a triangle 1/2 with its centroid 2/3 down; the star (inner
# radius 0.45 x outer) fills 0.384 of its 1.90 R x 1.81 R box with its centre R from the top.
_PROTOTYPES = {
    "circle": (np.pi / 4, 0.5),
    "square": (1.0, 0.5),
    "triangle": (0.5, 2 / 3),
    "star": (0.384, 1 / 1.809),
}


@dataclass(frozen=True)
class DetectedObject:
    """One detected object.

    Args:
        colour: the palette colour name.
        shape: `"circle"`, `"square"`, `"triangle"` or `"star"`.
        bbox: `(x0, y0, x1, y1)` of its pixels (less a lone stray edge line), end-exclusive, in 128-px
            coordinates.
        centre: `(cx, cy)`, the centre of `bbox`.
        area: its number of pixels.
    """

    colour: str
    shape: str
    bbox: tuple[int, int, int, int]
    centre: tuple[float, float]
    area: int


@dataclass(frozen=True)
class Detection:
    """What the detector read from an image: its background name and objects (top to bottom)."""

    background: str
    objects: tuple[DetectedObject, ...]


@dataclass(frozen=True)
class Judgement:
    """Whether an image is correct for its caption, why, and what was detected."""

    correct: bool
    reason: str
    detection: Detection


def _as_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        img = image.convert("RGB")
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise TypeError(f"expected a PIL image or an HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
        img = Image.fromarray(np.ascontiguousarray(arr[..., :3]), mode="RGB")
    if img.size != (CANVAS, CANVAS):
        # BOX averages when shrinking (no ringing that would invent colours); bilinear when enlarging.
        shrink = img.width > CANVAS or img.height > CANVAS
        img = img.resize((CANVAS, CANVAS), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def _runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Horizontal runs of equal non-negative labels: (row, start, end exclusive, label).
    h, w = labels.shape
    padded = np.full((h, w + 2), -1, dtype=np.int64)
    padded[:, 1:-1] = labels
    change = padded[:, 1:] != padded[:, :-1]  # (h, w + 1): a run boundary before column j
    rows, cols = np.nonzero(change)
    starts_mask = padded[rows, cols + 1] >= 0
    # Boundaries come in row order; a run starts at a boundary whose right pixel is labelled and
    # ends at the next boundary of the same row.
    order = np.arange(len(rows))
    nxt = order + 1
    valid = starts_mask & (nxt < len(rows))
    valid[valid] &= rows[nxt[valid]] == rows[valid]
    r, s = rows[valid], cols[valid]
    e = cols[nxt[valid]]
    return r, s, e, labels[r, s]


def _components(labels: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """8-connected components of each label; returns (label, rows, starts, ends) of each one's runs."""
    r, s, e, lab = _runs(labels)
    n = len(r)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Runs are sorted by row then start; compare each row's runs with the next row's.
    row_start = np.searchsorted(r, np.arange(labels.shape[0] + 1))
    sl, el, ll = s.tolist(), e.tolist(), lab.tolist()
    for row in range(labels.shape[0] - 1):
        a0, a1 = row_start[row], row_start[row + 1]
        b0, b1 = row_start[row + 1], row_start[row + 2]
        j = b0
        for i in range(a0, a1):
            # Skip runs of the next row that end before this one can touch them (8-connectivity: +-1 px).
            while j < b1 and el[j] < sl[i]:
                j += 1
            k = j
            while k < b1 and sl[k] <= el[i]:
                if ll[k] == ll[i]:
                    pi, pk = find(i), find(k)
                    if pi != pk:
                        parent[pk] = pi
                k += 1
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    comps = []
    for root in np.unique(roots):
        idx = np.nonzero(roots == root)[0]
        comps.append((ll[root], r[idx], s[idx], e[idx]))
    return comps


def _colour_labels(rgb: np.ndarray, border_bg: np.ndarray, threshold: float) -> np.ndarray:
    """Palette index of each pixel that is at least half a palette colour over the background, else -1.

    A pixel is modelled as a mix `b + alpha * (c - b)` of the background `b` and each palette colour `c`
    (which is what anti-aliasing and blur make of an edge); it takes the colour whose mix line it lies
    closest to, if that distance is within `threshold` and `alpha >= 0.5`. This finds exactly the
    pixels an object covers at least half of, where a plain nearest-colour rule would erode edges and
    thin star points (an anti-aliased edge is far from both pure colours).
    """
    # The observed background (median of the border pixels that voted for it) absorbs a slight tint.
    b = np.median(border_bg, axis=0) if len(border_bg) else _BG_RGB[0]
    d = _PALETTE_RGB - b  # (6, 3)
    p = rgb.reshape(-1, 3) - b
    pd = p @ d.T  # (n, 6)
    dd = (d * d).sum(axis=1)
    alpha = pd / dd
    a = np.clip(alpha, 0.0, 1.0)
    # |p - a d|^2 without forming the (n, 6, 3) differences
    residual2 = (p * p).sum(axis=1, keepdims=True) - 2 * a * pd + a * a * dd
    best = residual2.argmin(axis=1)
    idx = np.arange(len(p))
    keep = (residual2[idx, best] <= threshold * threshold) & (alpha[idx, best] >= 0.5)
    return np.where(keep, best, -1).reshape(rgb.shape[:2])


def _shape_features(mask: np.ndarray, x0: int, y0: int) -> tuple[tuple[int, int, int, int], float, float]:
    """Bounding box, fill ratio and relative centre-of-mass height of one component's mask.

    A noisy or blurred edge can grow a few stray pixels one line outside a straight side, which would
    make a square's box a line too big and its fill look like a circle's. So an outermost row or column
    is dropped when it holds at most an eighth of the pixels of the line inside it; apexes, star points
    and round tops grow more gradually than that and are kept.
    """
    top, left, bottom, right = 0, 0, mask.shape[0], mask.shape[1]
    if bottom > 2 and right > 2:
        rows, cols = mask.sum(axis=1), mask.sum(axis=0)
        top += int(rows[0] * 8 <= rows[1])
        bottom -= int(rows[-1] * 8 <= rows[-2])
        left += int(cols[0] * 8 <= cols[1])
        right -= int(cols[-1] * 8 <= cols[-2])
    core = mask[top:bottom, left:right]
    area = int(core.sum())
    h, w = core.shape
    com_y = float((core.sum(axis=1) * (np.arange(h) + 0.5)).sum() / max(area, 1))  # pixel centres at +0.5
    return (x0 + left, y0 + top, x0 + right, y0 + bottom), area / (h * w), com_y / h


def _classify(fill: float, com_y: float) -> str:
    # Nearest prototype. The centre-of-mass height counts double: blur fills a star's notches towards a
    # triangle's fill, but its centre of mass stays near the middle while a triangle's sits 2/3 down.
    return min(
        _PROTOTYPES, key=lambda k: (fill - _PROTOTYPES[k][0]) ** 2 + (2 * (com_y - _PROTOTYPES[k][1])) ** 2
    )


def detect(image, *, colour_threshold: float = COLOUR_THRESHOLD) -> Detection:
    """Reads the background and the objects of a shapes-world image.

    Args:
        image: a PIL image or an HxWx3 (or HxWx4) uint8 array. Images that are not 128 x 128 are
            resized to 128 x 128 first (box filter when shrinking, bilinear when enlarging), so all
            positions and areas are in 128-px units.
        colour_threshold: how far (RGB distance) a pixel may lie from the line between the background
            and its palette colour.

    Returns:
        A `Detection`; objects are sorted top to bottom, then left to right.
    """
    rgb = _as_array(image)

    border = np.concatenate(
        [
            rgb[:BORDER].reshape(-1, 3),
            rgb[-BORDER:].reshape(-1, 3),
            rgb[:, :BORDER].reshape(-1, 3),
            rgb[:, -BORDER:].reshape(-1, 3),
        ]
    )
    votes = np.linalg.norm(border[:, None, :] - _BG_RGB[None], axis=-1).argmin(axis=1)
    background = _BACKGROUNDS[int(np.bincount(votes, minlength=len(_BACKGROUNDS)).argmax())]

    labels = _colour_labels(rgb, border[votes == _BACKGROUNDS.index(background)], colour_threshold)

    objects = []
    for label, rows, starts, ends in _components(labels):
        lengths = ends - starts
        area = int(lengths.sum())
        if area < MIN_AREA:
            continue
        x0, x1 = int(starts.min()), int(ends.max())
        y0, y1 = int(rows.min()), int(rows.max()) + 1
        mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for r, s, e in zip((rows - y0).tolist(), (starts - x0).tolist(), (ends - x0).tolist(), strict=True):
            mask[r, s:e] = True
        (x0, y0, x1, y1), fill, com_y = _shape_features(mask, x0, y0)
        shape = _classify(fill, com_y)
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        objects.append(DetectedObject(_PALETTE[label], shape, (x0, y0, x1, y1), centre, area))
    objects.sort(key=lambda o: (o.bbox[1], o.bbox[0]))
    return Detection(background, tuple(objects))


def _name(pair: tuple[str, str]) -> str:
    return f"{pair[0]} {pair[1]}"


def judge(image, caption: str) -> Judgement:
    """Judges whether `image` shows exactly what `caption` says.

    Correct iff the detected objects are the named ones as a multiset of (colour, shape), the relation
    (if any) holds between bounding-box centres with `RELATION_MARGIN` px to spare (e.g. "to the left of":
    `c1.x + 8 <= c2.x`; y grows downwards), and the background matches (white when unnamed). Relation
    objects are matched to detections by colour and shape; when both are the same pair, either
    assignment may satisfy it.

    Args:
        image: a PIL image or an HxWx3 uint8 array (see `detect`).
        caption: a shapes-world caption; text outside the grammar raises `ValueError`.

    Returns:
        A `Judgement` whose `reason` is `"ok"` or the failures joined by `"; "`, e.g.
        `"background black != white; missing red star; extra blue circle"`.
    """
    spec = parse_caption(caption)
    detection = detect(image)
    problems = []
    if detection.background != spec.background:
        problems.append(f"background {detection.background} != {spec.background}")
    named = Counter(spec.objects)
    found = Counter((o.colour, o.shape) for o in detection.objects)
    for pair, n in (named - found).items():
        problems.append(f"missing {'' if n == 1 else f'{n} x '}{_name(pair)}")
    for pair, n in (found - named).items():
        problems.append(f"extra {'' if n == 1 else f'{n} x '}{_name(pair)}")
    if spec.relation is not None and not problems:
        first, second = spec.objects
        firsts = [o for o in detection.objects if (o.colour, o.shape) == first]
        seconds = [o for o in detection.objects if (o.colour, o.shape) == second]
        if not any(
            a is not b and relation_holds(a.centre, b.centre, spec.relation, RELATION_MARGIN)
            for a in firsts
            for b in seconds
        ):
            problems.append(f"relation failed: {_name(first)} not {spec.relation} {_name(second)}")
    return Judgement(not problems, "; ".join(problems) or "ok", detection)


def score(images, captions) -> float:
    """The fraction of `images` judged correct for their `captions` (same length, at least one)."""
    images, captions = list(images), list(captions)
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if not images:
        raise ValueError("no images to score")
    return sum(judge(im, cap).correct for im, cap in zip(images, captions, strict=True)) / len(images)
