"""Training data held in memory: a pool of images, captions and (optionally) depth maps and object boxes.

Rendering a shapes-world sample takes about a millisecond, far less than a training step, so each run
renders a fixed pool once (deterministic in its seed) and every stage draws batches from it. Any
Hugging Face "imagefolder" (images + `metadata.jsonl` with `file_name` and `text`) loads into the same
pool for training on other data or fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


@dataclass
class ImagePool:
    """Images, captions and optional conditioning, as CPU tensors.

    Args:
        images (`torch.Tensor`): `(N, 3, H, W)` uint8 RGB.
        captions (`list[str]`): one caption per image.
        depth (`torch.Tensor`, *optional*): `(N, 1, H, W)` uint8 depth maps (white = near).
        boxes (`torch.Tensor`, *optional*): `(N, K, 4)` int16 object boxes `(x0, y0, x1, y1)`, end-exclusive,
            rows of -1 where an image has fewer than K objects. Used to draw inpainting masks.
        layout (`torch.Tensor`, *optional*): `(N, 3 * (len(COLOURS) + len(SHAPES)) + 1)` float scene facts of
            shapes-world images (see `layout_targets`), an auxiliary target for the CLIP image tower.
    """

    images: torch.Tensor
    captions: list[str]
    depth: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    layout: torch.Tensor | None = None

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.images.dtype != torch.uint8:
            raise ValueError(f"pool images must be a (N, 3, H, W) uint8 tensor, got {tuple(self.images.shape)} "
                             f"{self.images.dtype}")
        if len(self.captions) != len(self.images):
            raise ValueError(f"pool has {len(self.images)} images but {len(self.captions)} captions")
        if len(self.images) == 0:
            raise ValueError("the training data is empty; expected at least one image")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def pixels(self, idx: torch.Tensor) -> torch.Tensor:
        """Images `idx` as float in [-1, 1], the range MoVQ encodes."""
        return self.images[idx].float() / 127.5 - 1.0


def build_shapes_pool(n: int, *, seed: int = 0, progress: bool = True) -> ImagePool:
    """Renders samples `0..n-1` of `ShapesGenerator(seed)`; held-out colour-shape pairs never appear.

    Args:
        n (`int`): pool size.
        seed (`int`): the generator's seed.
        progress (`bool`): show a tqdm bar.
    """
    from tqdm.auto import tqdm

    from pintor.data.shapes import HELD_OUT, ShapesGenerator

    if n < 1:
        raise ValueError(f"pool size must be >= 1, got {n}")
    gen = ShapesGenerator(seed, allow_held_out=False)
    first = gen.sample(0)
    size = first.image.size[0]
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    depth = torch.empty(n, 1, size, size, dtype=torch.uint8)
    boxes = torch.full((n, 4, 4), -1, dtype=torch.int16)
    layout = torch.empty(n, LAYOUT_DIM)
    captions = []
    for i in tqdm(range(n), desc="render shapes", disable=not progress, mininterval=5):
        s = first if i == 0 else gen.sample(i)
        # The generator already excludes held-out pairs; checking again costs nothing and guards the rule.
        if any((o.colour, o.shape) in HELD_OUT for o in s.objects):
            raise RuntimeError(f"shapes sample {i} shows a held-out pair: {s.caption!r}")
        images[i] = torch.from_numpy(np.array(s.image, dtype=np.uint8)).permute(2, 0, 1)
        depth[i, 0] = torch.from_numpy(np.array(s.depth, dtype=np.uint8))
        for k, m in enumerate(s.masks[:4]):
            bb = m.getbbox()
            if bb is not None:
                boxes[i, k] = torch.tensor(bb, dtype=torch.int16)
        layout[i] = layout_targets(s.objects, s.background, size)
        captions.append(s.caption)
    return ImagePool(images, captions, depth, boxes, layout)


LAYOUT_DIM = 3 * (6 + 4) + 1


def layout_targets(objects, background: str, size: int = 128) -> torch.Tensor:
    """Scene facts of a shapes-world image that the CLIP image embedding is trained to contain.

    Per colour and per shape (not per colour-shape pair, so held-out pairs are covered by their parts):
    the number of such objects / 4 and the mean box centre in [-1, 1] (0 when absent); then the
    background index. Colour and shape share positions, which is what binds them; positions make
    relations ("to the left of") part of the embedding, which contrastive learning alone barely does.
    """
    from pintor.data.vocabulary import BACKGROUNDS, COLOURS, SHAPES

    out = torch.zeros(LAYOUT_DIM)
    slots = [COLOURS.index(o.colour) for o in objects], [len(COLOURS) + SHAPES.index(o.shape) for o in objects]
    for idx in slots:
        for o, k in zip(objects, idx, strict=True):
            out[3 * k] += 0.25
            cx, cy = o.centre
            out[3 * k + 1] += 2 * cx / size - 1
            out[3 * k + 2] += 2 * cy / size - 1
    for k in range(len(COLOURS) + len(SHAPES)):
        n = out[3 * k] * 4
        if n > 0:
            out[3 * k + 1 : 3 * k + 3] /= n
    out[-1] = BACKGROUNDS.index(background)
    return out


def _square(img: Image.Image, size: int, resample) -> Image.Image:
    # Resize the short side to `size`, then centre-crop: the usual imagefolder preprocessing.
    w, h = img.size
    k = size / min(w, h)
    nw, nh = max(size, round(w * k)), max(size, round(h * k))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), resample=resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


DEPTH_KEYS = ("depth_path", "depth_file", "conditioning_image", "hint")


def load_imagefolder_pool(folder: str | Path, *, resolution: int, limit: int | None = None,
                          progress: bool = True) -> ImagePool:
    """Loads an imagefolder dataset, resized and centre-cropped to `resolution`.

    A `depth_file` (or `conditioning_image`) column, when every record has one, becomes the pool's
    depth maps for the depth ControlNet.

    Args:
        folder (`str` or `Path`): folder with `metadata.jsonl` (`file_name`, `text`, ...).
        resolution (`int`): square training size; a multiple of 8 for MoVQ.
        limit (`int`, *optional*): read only the first `limit` records.
        progress (`bool`): show a tqdm bar.
    """
    from tqdm.auto import tqdm

    from pintor.data.shapes import read_imagefolder

    if resolution < 8 or resolution % 8:
        raise ValueError(f"resolution must be a positive multiple of 8, got {resolution}")
    records = read_imagefolder(folder)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise ValueError(f"image folder {str(folder)!r} has no records; expected lines in metadata.jsonl")
    root = Path(folder)

    def depth_path(r: dict) -> Path | None:
        for k in DEPTH_KEYS:
            if isinstance(r.get(k), (str, Path)):
                p = Path(r[k])
                return p if p.is_absolute() else (root / p).resolve()
        return None

    has_depth = all(depth_path(r) is not None for r in records)
    n = len(records)
    images = torch.empty(n, 3, resolution, resolution, dtype=torch.uint8)
    depth = torch.empty(n, 1, resolution, resolution, dtype=torch.uint8) if has_depth else None
    captions = []
    for i, r in enumerate(tqdm(records, desc="load images", disable=not progress, mininterval=5)):
        try:
            with Image.open(r["path"]) as im:
                img = _square(im.convert("RGB"), resolution, Image.BICUBIC)
            if depth is not None:
                with Image.open(depth_path(r)) as dm:
                    d = _square(dm.convert("L"), resolution, Image.BILINEAR)
                depth[i, 0] = torch.from_numpy(np.array(d, dtype=np.uint8))
        except OSError as e:
            raise ValueError(f"cannot read image {str(r['path'])!r} ({e}); expected a PNG or JPEG") from None
        images[i] = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
        captions.append(r["text"])
    return ImagePool(images, captions, depth, None)


# ----------------------------------------------------------------------------------------------------
# CLIP image preprocessing
# ----------------------------------------------------------------------------------------------------


def clip_resize(pool: ImagePool, image_processor, *, progress: bool = True) -> torch.Tensor:
    """The pool's images resized for the CLIP image tower, `(N, 3, S, S)` uint8.

    Uses PIL's bicubic resize exactly as `CLIPImageProcessor` does, so `clip_normalize` of the result
    equals what the processor gives the pipelines at inference time.
    """
    from tqdm.auto import tqdm

    size = _processor_size(image_processor)
    if pool.resolution == size:
        return pool.images
    out = torch.empty(len(pool), 3, size, size, dtype=torch.uint8)
    resample = getattr(image_processor, "resample", Image.BICUBIC)
    for i in tqdm(range(len(pool)), desc="clip resize", disable=not progress, mininterval=5):
        img = Image.fromarray(pool.images[i].permute(1, 2, 0).numpy())
        img = _square(img, size, resample)
        out[i] = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
    return out


def _processor_size(image_processor) -> int:
    crop = getattr(image_processor, "crop_size", None) or {}
    if isinstance(crop, dict) and "height" in crop:
        return int(crop["height"])
    size = image_processor.size
    return int(size.get("shortest_edge") or size.get("height"))


def clip_normalize(pixels: torch.Tensor, image_processor) -> torch.Tensor:
    """uint8 CLIP-sized images to the processor's normalised `pixel_values`."""
    mean = torch.tensor(image_processor.image_mean, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


# ----------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------


def caption_key(text: str) -> str:
    """A key equal for captions that say the same thing, so contrastive training treats them as one.

    Shapes-world captions are canonicalised (unnamed background = white, pair order, "A left of B" =
    "B right of A"); other text is compared lower-cased with collapsed whitespace.
    """
    from pintor.data.shapes import parse_caption

    try:
        spec = parse_caption(text)
    except (ValueError, TypeError):
        return " ".join(str(text).lower().split())
    objs = list(spec.objects)
    rel = spec.relation
    if spec.form == "pair":
        objs = sorted(objs)
    elif spec.form == "relation":
        flip = {"to the right of": "to the left of", "below": "above"}
        if rel in flip:
            objs, rel = objs[::-1], flip[rel]
    return f"{spec.form}|{objs}|{rel}|{spec.background}"


_OPPOSITE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below",
             "below": "above"}


def hard_negative(text: str, u: torch.Tensor) -> str | None:
    """A caption that differs from shapes-world caption `text` in one detail, or `None` for other text.

    In-batch negatives almost never differ from a caption only in a relation's direction, in which colour
    goes with which shape, or in a count, so contrastive training alone would not teach those; these
    negatives do (as in NegCLIP). Never returns a caption with a held-out pair.

    Args:
        text: the caption.
        u: 4 uniform random numbers in [0, 1) that pick the change.
    """
    from pintor.data.shapes import HELD_OUT, CaptionSpec, caption_for, parse_caption
    from pintor.data.vocabulary import BACKGROUNDS, COLOURS, SHAPES

    try:
        spec = parse_caption(text)
    except (ValueError, TypeError):
        return None
    objs, rel, form = list(spec.objects), spec.relation, spec.form
    bg, named = spec.background, spec.background_named
    choice = float(u[0])
    if form == "relation" and choice < 0.6:
        rel = _OPPOSITE[rel]
    elif form in ("pair", "relation") and choice < 0.75 and objs[0][0] != objs[1][0] and objs[0][1] != objs[1][1]:
        (c1, s1), (c2, s2) = objs
        objs = [(c2, s1), (c1, s2)]  # swap the colours: same words, other binding
    elif form == "count" and choice < 0.6:
        n = len(objs)
        others = [k for k in (2, 3, 4) if k != n]
        objs = objs[:1] * others[int(u[1] * len(others)) % len(others)]
    elif choice < 0.85:
        k = int(u[1] * len(objs)) % len(objs) if form != "count" else None
        colour, shape = objs[k or 0]
        if u[2] < 0.5:
            colour = COLOURS[(COLOURS.index(colour) + 1 + int(u[3] * (len(COLOURS) - 1))) % len(COLOURS)]
        else:
            shape = SHAPES[(SHAPES.index(shape) + 1 + int(u[3] * (len(SHAPES) - 1))) % len(SHAPES)]
        if form == "count":
            objs = [(colour, shape)] * len(objs)
        else:
            objs[k] = (colour, shape)
    else:
        bg = BACKGROUNDS[(BACKGROUNDS.index(bg) + 1 + int(u[3] * 2)) % 3]
        named = True
    if any(o in HELD_OUT for o in objs) or (form in ("pair", "relation") and objs[0] == objs[1]):
        return None
    try:
        return caption_for(CaptionSpec(form, tuple(objs), rel, bg, named))
    except ValueError:
        return None


def tokenize(tokenizer, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask padded to the tokenizer's max length, as the prior pipeline does."""
    enc = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    return enc.input_ids, enc.attention_mask.bool()


# ----------------------------------------------------------------------------------------------------
# Inpainting masks
# ----------------------------------------------------------------------------------------------------


def prepare_latent_mask(keep: torch.Tensor) -> torch.Tensor:
    """Vectorised `prepare_mask` of the Kandinsky 2.2 inpainting pipeline.

    `keep` is `(B, 1, h, w)` with 1 = keep, 0 = repaint. Each repaint pixel also clears its neighbours
    above, left, above-left, below, right and below-right (the pipeline's exact, asymmetric stencil).
    """
    repaint = keep != 1
    grown = repaint.clone()
    # A pixel is cleared when a repaint pixel sits at offset (di, dj) from it with (-di, -dj) in the stencil.
    for di, dj in ((1, 0), (0, 1), (1, 1), (-1, 0), (0, -1), (-1, -1)):
        src = repaint
        shifted = torch.zeros_like(src)
        h, w = src.shape[-2:]
        ys = slice(max(di, 0), h + min(di, 0))
        yd = slice(max(-di, 0), h + min(-di, 0))
        xs = slice(max(dj, 0), w + min(dj, 0))
        xd = slice(max(-dj, 0), w + min(-dj, 0))
        shifted[..., yd, xd] = src[..., ys, xs]
        grown |= shifted
    return (~grown).to(keep.dtype)


def random_repaint_masks(boxes: torch.Tensor | None, n: int, size: int, gen: torch.Generator, *,
                         p_object: float = 0.5, p_full: float = 0.1) -> torch.Tensor:
    """Draws `(n, 1, size, size)` float repaint masks (1 = repaint), the user-facing convention.

    A mask is an object's box grown by 0..8 px (`p_object`, when boxes are known), the whole image
    (`p_full`), or else a random rectangle of side 16..75% of the image.
    """
    masks = torch.zeros(n, 1, size, size)
    u = torch.rand(n, generator=gen)
    r = torch.rand(n, 6, generator=gen)
    for i in range(n):
        if u[i] < p_full:
            masks[i] = 1
            continue
        box = None
        if boxes is not None and u[i] < p_full + p_object:
            valid = boxes[i][boxes[i, :, 0] >= 0]
            if len(valid):
                x0, y0, x1, y1 = valid[int(r[i, 0] * len(valid)) % len(valid)].tolist()
                g = int(r[i, 1] * 9) * size // 128
                box = (max(0, x0 - g), max(0, y0 - g), min(size, x1 + g), min(size, y1 + g))
        if box is None:
            lo, hi = size // 8, int(size * 0.75)
            w = lo + int(r[i, 2] * (hi - lo))
            h = lo + int(r[i, 3] * (hi - lo))
            x0 = int(r[i, 4] * (size - w + 1))
            y0 = int(r[i, 5] * (size - h + 1))
            box = (x0, y0, x0 + w, y0 + h)
        masks[i, :, box[1]:box[3], box[0]:box[2]] = 1
    return masks


def inpaint_inputs(latents: torch.Tensor, repaint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inpainting UNet's extra inputs exactly as the pipeline builds them.

    Args:
        latents: `(B, C, h, w)` MoVQ latents of the whole original image.
        repaint: `(B, 1, H, W)` pixel masks, 1 = repaint.

    Returns:
        `(masked_latents, keep_mask)`: latents times the latent keep-mask, and that mask (1 = keep).
    """
    import torch.nn.functional as F

    keep = 1 - repaint
    keep = F.interpolate(keep, tuple(latents.shape[-2:]), mode="nearest")
    keep = prepare_latent_mask(keep)
    return latents * keep, keep
