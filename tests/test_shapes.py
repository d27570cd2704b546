import json

import numpy as np
import pytest
from PIL import Image

from pintor.data.shapes import (
    BACKGROUND_RGB,
    CANVAS,
    COLOUR_RGB,
    HELD_OUT,
    CaptionSpec,
    ShapeObject,
    ShapesGenerator,
    caption_for,
    layout_for,
    make_sample,
    parse_caption,
    read_imagefolder,
    render,
    sample_spec,
    write_imagefolder,
)
from pintor.data.vocabulary import COLOURS, RELATIONS, WORDS


@pytest.fixture(scope="module")
def samples():
    return ShapesGenerator(seed=123).take(2000)


def test_constants_follow_the_spec():
    assert CANVAS == 128
    assert BACKGROUND_RGB == {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
    assert COLOUR_RGB["orange"] == (250, 140, 20) and set(COLOUR_RGB) == set(COLOURS)
    assert HELD_OUT == {("red", "star"), ("blue", "triangle"), ("green", "square"), ("yellow", "circle")}


def test_generator_is_deterministic_and_order_independent():
    a, b = ShapesGenerator(7), ShapesGenerator(7)
    later = b.sample(5)  # drawn first on b, fifth on a
    first = a.take(6)[5]
    assert first.caption == later.caption and first.objects == later.objects
    assert np.array_equal(np.asarray(first.image), np.asarray(later.image))
    assert np.array_equal(np.asarray(first.depth), np.asarray(later.depth))
    assert all(
        np.array_equal(np.asarray(m), np.asarray(n)) for m, n in zip(first.masks, later.masks, strict=True)
    )
    other = a.sample(6)
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))
    assert not np.array_equal(np.asarray(a.sample(0).image), np.asarray(ShapesGenerator(8).sample(0).image))
    it = iter(a)
    assert [next(it).caption for _ in range(3)] == [s.caption for s in a.take(3)]


@pytest.mark.parametrize(
    "text, spec",
    [
        ("a red circle", CaptionSpec("single", (("red", "circle"),))),
        ("an orange star", CaptionSpec("single", (("orange", "star"),))),
        ("three blue squares", CaptionSpec("count", (("blue", "square"),) * 3)),
        (
            "a green star and a purple triangle",
            CaptionSpec("pair", (("green", "star"), ("purple", "triangle"))),
        ),
        (
            "a yellow square to the left of a red star",
            CaptionSpec("relation", (("yellow", "square"), ("red", "star")), "to the left of"),
        ),
        (
            "an orange circle below a blue star on a gray background",
            CaptionSpec("relation", (("orange", "circle"), ("blue", "star")), "below", "gray", True),
        ),
        (
            "two green circles on a white background",
            CaptionSpec("count", (("green", "circle"),) * 2, None, "white", True),
        ),
    ],
)
def test_spec_examples_parse(text, spec):
    assert parse_caption(text) == spec
    assert caption_for(spec) == text


def test_caption_round_trip_on_many_specs():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        spec = sample_spec(rng, allow_held_out=True)
        text = caption_for(spec)
        assert parse_caption(text) == spec
        assert set(text.split()) <= set(WORDS)
        assert text == text.lower()
    assert parse_caption("  A Red   circle ") == parse_caption("a red circle")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("a orange star", "'an'"),
        ("an red circle", "'a'"),
        ("a red hexagon", "not a shape"),
        ("a pink circle", "not a colour"),
        ("two blue square", "plural"),
        ("five red circles", "outside the grammar"),
        ("two blue squares and a red circle", "count caption"),
        ("a red circle next to a blue star", "relation"),
        ("a red circle and", "ends early"),
        ("a red circle on a pink background", "not a background"),
        ("a red circle on white background", "background"),
        ("a red circle and a blue star and a green square", "unexpected words"),
    ],
)
def test_parse_caption_errors(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_caption(text)


def test_invalid_specs_are_rejected():
    with pytest.raises(ValueError):
        CaptionSpec("single", (("red", "circle"),), background="black")  # unnamed means white
    with pytest.raises(ValueError):
        CaptionSpec("count", (("red", "circle"), ("blue", "circle")))
    with pytest.raises(ValueError):
        CaptionSpec("relation", (("red", "circle"), ("blue", "star")), "beside")


def test_sample_spec_mix_and_held_out():
    rng = np.random.default_rng(1)
    specs = [sample_spec(rng) for _ in range(20000)]
    assert not any(pair in HELD_OUT for spec in specs for pair in spec.objects)
    forms = {f: sum(s.form == f for s in specs) / len(specs) for f in ("single", "count", "pair", "relation")}
    assert all(0.15 < v < 0.35 for v in forms.values()), forms
    assert {s.background for s in specs} == set(BACKGROUND_RGB)
    assert any(s.background_named and s.background == "white" for s in specs)
    assert any(not s.background_named for s in specs)
    assert {s.relation for s in specs if s.relation} == set(RELATIONS)
    assert all(len(set(s.objects)) == 2 for s in specs if s.form in ("pair", "relation"))
    # and they do appear when allowed
    rng = np.random.default_rng(2)
    assert any(p in HELD_OUT for _ in range(2000) for p in sample_spec(rng, allow_held_out=True).objects)


def test_rendered_samples_avoid_held_out(samples):
    for s in samples:
        assert not any((o.colour, o.shape) in HELD_OUT for o in s.objects)
        assert not any(pair in HELD_OUT for pair in parse_caption(s.caption).objects)
        for colour, shape in HELD_OUT:  # in any role, any wording (plural too)
            assert f"{colour} {shape}" not in s.caption


def test_layout_rules(samples):
    for s in samples:
        assert 1 <= len(s.objects) <= 4
        assert sorted((o.colour, o.shape) for o in s.objects) == sorted(s.spec.objects)
        assert len({o.depth for o in s.objects}) == len(s.objects)
        for o in s.objects:
            assert 24 <= o.size <= 40 and 128 <= o.depth <= 255
            x0, y0, x1, y1 = o.box
            assert x0 >= 4 and y0 >= 4 and x1 <= CANVAS - 4 and y1 <= CANVAS - 4
        for i, a in enumerate(s.objects):
            for b in s.objects[i + 1 :]:
                ax0, ay0, ax1, ay1 = a.box
                bx0, by0, bx1, by1 = b.box
                gap = max(bx0 - ax1, ax0 - bx1, by0 - ay1, ay0 - by1)
                assert gap >= 4
        if s.spec.relation:
            (x1, y1), (x2, y2) = s.objects[0].centre, s.objects[1].centre
            delta = {
                "to the left of": x2 - x1,
                "to the right of": x1 - x2,
                "above": y2 - y1,
                "below": y1 - y2,
            }
            assert delta[s.spec.relation] >= 24


def test_every_form_lays_out():
    rng = np.random.default_rng(3)
    crowded = CaptionSpec("count", (("purple", "square"),) * 4)
    for _ in range(200):
        assert len(layout_for(crowded, rng)) == 4
    for form in ("single", "count", "pair", "relation"):
        s = make_sample(sample_spec(rng, form=form), rng)
        assert s.spec.form == form and s.caption == caption_for(s.spec)


def test_depth_and_masks(samples):
    for s in samples[:200]:
        img = np.asarray(s.image).astype(int)
        depth = np.asarray(s.depth)
        assert s.image.size == s.depth.size == (128, 128) and s.image.mode == "RGB" and s.depth.mode == "L"
        masks = [np.asarray(m) > 0 for m in s.masks]
        assert all(set(np.unique(np.asarray(m))) <= {0, 255} for m in s.masks)
        union = np.zeros_like(masks[0])
        for m in masks:
            assert not (union & m).any()  # objects never overlap
            union |= m
        assert (depth[~union] == 0).all()
        bg = np.array(BACKGROUND_RGB[s.background])
        for o, m in zip(s.objects, masks, strict=True):
            assert (depth[m] == o.depth).all()
            # mask = pixels at least half covered: nearer the object's colour than the background
            colour = np.array(COLOUR_RGB[o.colour])
            x0, y0, x1, y1 = o.box
            box = img[y0:y1, x0:x1]
            nearer = np.linalg.norm(box - colour, axis=-1) <= np.linalg.norm(box - bg, axis=-1) + 2
            farther = np.linalg.norm(box - colour, axis=-1) + 2 >= np.linalg.norm(box - bg, axis=-1)
            assert (nearer[m[y0:y1, x0:x1]]).all() and (farther[~m[y0:y1, x0:x1]]).all()
            assert m.sum() > 0.3 * o.size**2
            assert (m[y0:y1, x0:x1].sum()) == m.sum()  # mask lies inside the box
        # outside every box the image is exactly the background
        outside = np.ones(depth.shape, bool)
        for o in s.objects:
            x0, y0, x1, y1 = o.box
            outside[y0:y1, x0:x1] = False
        assert (img[outside] == bg).all()


def test_shapes_drawn_as_specified():
    objs = [
        ShapeObject("red", "square", 10, 10, 40, 200),
        ShapeObject("blue", "circle", 60, 10, 40, 180),
        ShapeObject("green", "triangle", 10, 60, 40, 160),
        ShapeObject("purple", "star", 60, 60, 40, 140),
    ]
    image, _, masks = render(objs, "white")
    areas = [np.asarray(m).astype(bool).sum() for m in masks]
    assert areas[0] == 1600
    assert abs(areas[1] / 1600 - np.pi / 4) < 0.01
    assert abs(areas[2] / 1600 - 0.5) < 0.01
    star_area = 5 * 20 * 9 * np.sin(np.pi / 5)  # 10 triangles of radii R, 0.45 R at 36 degrees
    assert abs(areas[3] - star_area) < 0.02 * star_area
    px = np.asarray(image)
    assert tuple(px[30, 30]) == COLOUR_RGB["red"] and tuple(px[30, 80]) == COLOUR_RGB["blue"]
    tri = np.asarray(masks[2]).astype(bool)
    assert tri[61, 29:31].any() and not tri[61, 12]  # apex at the top middle
    assert tri[99, 11:49].all()  # base along the bottom edge
    star = np.asarray(masks[3]).astype(bool)
    assert star[61, 79:81].any() and not star[99, 80]  # one point straight up, notch at the bottom
    big, _, _ = render(objs, "black", size=256)
    assert big.size == (256, 256) and tuple(np.asarray(big)[60, 60]) == COLOUR_RGB["red"]


def test_write_and_read_imagefolder(tmp_path):
    out = write_imagefolder(tmp_path / "ds", 6, seed=4, progress=False)
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:05d}.png" for i in range(6)]
    assert len(list((out / "depth").iterdir())) == 6
    lines = (out / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 6
    first = json.loads(lines[0])
    assert set(first) == {"file_name", "text", "depth_file", "background", "objects"}
    assert set(first["objects"][0]) == {"colour", "shape", "x", "y", "size", "depth"}
    records = read_imagefolder(out)
    gen = ShapesGenerator(4)
    for i, r in enumerate(records):
        s = gen.sample(i)
        assert r["text"] == s.caption and r["path"].is_file() and r["depth_path"].is_file()
        assert np.array_equal(np.asarray(Image.open(r["path"])), np.asarray(s.image))
        assert [ShapeObject(**o) for o in r["objects"]] == s.objects


def test_read_imagefolder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_imagefolder(tmp_path / "nope")
    with pytest.raises(ValueError, match="metadata.jsonl"):
        read_imagefolder(tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png"}\n')
    with pytest.raises(ValueError, match="'text'"):
        read_imagefolder(tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "a red circle"}\n')
    with pytest.raises(ValueError, match="does not exist"):
        read_imagefolder(tmp_path)
    (tmp_path / "metadata.jsonl").write_text("not json\n")
    with pytest.raises(ValueError, match="JSON"):
        read_imagefolder(tmp_path)
    # a minimal foreign image folder reads fine
    ShapesGenerator(0).sample(0).image.save(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "anything"}\n\n')
    [record] = read_imagefolder(tmp_path)
    assert record["text"] == "anything" and record["path"] == (tmp_path / "a.png").resolve()
    assert "depth_path" not in record
