from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageFilter

from pintor.data.shapes import CaptionSpec, ShapeObject, ShapesGenerator, caption_for, render
from pintor.data.vocabulary import COLOURS, RELATIONS
from pintor.eval.detector import Detection, detect, judge, score

OPPOSITE = dict(zip(RELATIONS, ("to the right of", "to the left of", "below", "above"), strict=True))


@pytest.fixture(scope="module")
def samples():
    return ShapesGenerator(seed=2024).take(500)


def _degrade(image, rng, sigma=8.0, blur=0.8):
    blurred = image.filter(ImageFilter.GaussianBlur(blur))
    noisy = np.asarray(blurred).astype(np.float32) + rng.normal(0.0, sigma, (128, 128, 3))
    return Image.fromarray(noisy.clip(0, 255).round().astype(np.uint8))


def test_rendered_samples_are_judged_correct(samples):
    judgements = [judge(s.image, s.caption) for s in samples]
    accuracy = np.mean([j.correct for j in judgements])
    wrong = [(s.caption, j.reason) for s, j in zip(samples, judgements, strict=True) if not j.correct]
    assert accuracy >= 0.99, wrong[:5]
    assert all(j.reason == "ok" for j in judgements if j.correct)
    assert score([s.image for s in samples[:50]], [s.caption for s in samples[:50]]) >= 0.98


def test_detection_matches_the_scene(samples):
    for s in samples[:100]:
        det = detect(s.image)
        assert isinstance(det, Detection) and det.background == s.background
        assert sorted((o.colour, o.shape) for o in det.objects) == sorted(
            (o.colour, o.shape) for o in s.objects
        )
        for o in s.objects:
            # each true box holds one detection, whose centre is within a few pixels of the box centre
            x0, y0, x1, y1 = o.box
            [d] = [d for d in det.objects if x0 <= d.centre[0] < x1 and y0 <= d.centre[1] < y1]
            assert abs(d.centre[0] - o.centre[0]) <= 1.5 and abs(d.centre[1] - o.centre[1]) <= 3
            assert d.bbox[0] >= x0 and d.bbox[1] >= y0 and d.bbox[2] <= x1 and d.bbox[3] <= y1
            assert d.area == pytest.approx(
                np.asarray(s.masks[s.objects.index(o)]).astype(bool).sum(), rel=0.1
            )


def _wrong_captions(spec: CaptionSpec):
    """Captions that differ from `spec` in exactly one judged way."""
    (c1, s1), *rest = spec.objects
    other = next(c for c in COLOURS if c != c1 and (c, s1) not in spec.objects)
    if spec.form == "count":
        n = len(spec.objects)
        yield "colour", replace(spec, objects=((other, s1),) * n)
        yield "count", replace(spec, objects=((c1, s1),) * (n + 1 if n < 4 else n - 1))
    else:
        yield "colour", replace(spec, objects=((other, s1), *rest))
        if spec.form == "single":
            yield "count", replace(spec, form="count", objects=((c1, s1),) * 2)
        else:
            yield "count", replace(spec, form="single", objects=((c1, s1),), relation=None)
    if spec.relation:
        yield "relation", replace(spec, relation=OPPOSITE[spec.relation])
    bg = next(b for b in ("black", "gray", "white") if b != spec.background)
    yield "background", replace(spec, background=bg, background_named=True)


def test_wrong_captions_are_judged_wrong(samples):
    kinds = set()
    for s in samples[:150]:
        for kind, spec in _wrong_captions(s.spec):
            j = judge(s.image, caption_for(spec))
            assert not j.correct, (s.caption, caption_for(spec))
            kinds.add(kind)
            if kind == "relation":
                assert j.reason.startswith("relation failed")
            if kind == "background":
                assert j.reason == f"background {s.background} != {spec.background}"
    assert kinds == {"colour", "count", "relation", "background"}


def test_reasons():
    objs = [ShapeObject("blue", "circle", 10, 40, 30, 200), ShapeObject("orange", "star", 80, 40, 36, 150)]
    image, _, _ = render(objs, "black")
    assert judge(image, "a blue circle to the left of an orange star on a black background").reason == "ok"
    assert judge(image, "a blue circle on a black background").reason == "extra orange star"
    j = judge(image, "a blue circle and a red star")
    assert j.reason == "background black != white; missing red star; extra orange star"
    j = judge(image, "a blue circle to the right of an orange star on a black background")
    assert j.reason == "relation failed: blue circle not to the right of orange star"
    # "above" needs 8 px of vertical separation: side by side at one height is neither above nor below
    assert not judge(image, "a blue circle above an orange star on a black background").correct
    assert not judge(image, "a blue circle below an orange star on a black background").correct
    with pytest.raises(ValueError):
        judge(image, "a blue blob")


def test_same_pair_relation_either_assignment():
    objs = [ShapeObject("green", "circle", 10, 10, 30, 200), ShapeObject("green", "circle", 10, 80, 30, 150)]
    image, _, _ = render(objs, "white")
    assert judge(image, "a green circle above a green circle").correct
    assert not judge(image, "a green circle to the left of a green circle").correct


def test_robust_to_noise_and_blur(samples):
    rng = np.random.default_rng(0)
    subset = samples[:200]
    judgements = [judge(_degrade(s.image, rng), s.caption) for s in subset]
    accuracy = np.mean([j.correct for j in judgements])
    assert accuracy >= 0.98, [j.reason for j in judgements if not j.correct][:5]


def test_input_forms_and_sizes():
    s = ShapesGenerator(seed=5, allow_held_out=True).sample(3)
    array = np.asarray(s.image)
    assert judge(array, s.caption).correct  # HxWx3 uint8 array
    rgba = np.concatenate([array, np.full((128, 128, 1), 255, np.uint8)], axis=-1)
    assert detect(rgba) == detect(s.image)
    big, _, _ = render(s.objects, s.background, size=256)
    assert judge(big, s.caption).correct  # judged after resizing to 128
    with pytest.raises(TypeError):
        detect(array.astype(np.float32))
    with pytest.raises(ValueError):
        score([], [])
    with pytest.raises(ValueError):
        score([s.image], [])


def test_held_out_pairs_are_detected():
    held = [
        ShapeObject(c, sh, 10 + 58 * (i % 2), 10 + 58 * (i // 2), 40, 200 + i)
        for i, (c, sh) in enumerate(
            [("red", "star"), ("blue", "triangle"), ("green", "square"), ("yellow", "circle")]
        )
    ]
    image, _, _ = render(held, "gray")
    found = sorted((o.colour, o.shape) for o in detect(image).objects)
    assert found == sorted((o.colour, o.shape) for o in held)


def test_small_specks_are_noise():
    image, _, _ = render([ShapeObject("red", "square", 20, 20, 30, 200)], "white")
    px = np.asarray(image).copy()
    px[100:106, 100:106] = (30, 90, 230)  # 36 px of blue: below the 40 px floor
    assert judge(Image.fromarray(px), "a red square").correct
    px[100:107, 100:107] = (30, 90, 230)  # 49 px
    assert judge(Image.fromarray(px), "a red square").reason == "extra blue square"
