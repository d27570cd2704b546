"""Every mode through `pintor.load(path)` on tiny real components: shapes, ranges, determinism, sharing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import pintor
from pintor.backends.common import RunControl
from pintor.errors import ModeNotSupportedError, PintorError
from pintor.schedulers import SCHEDULERS

Q = dict(show_progress=False)


def _arr(img):
    return np.asarray(img, dtype=np.int16)


def _check_images(images, n=1, size=(64, 64)):
    assert isinstance(images, list) and len(images) == n
    for img in images:
        assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == size
        a = np.asarray(img)
        assert a.dtype == np.uint8 and a.std() > 0  # a real decode, not a blank canvas


def test_generate_shapes_and_metadata(painter):
    images = painter.generate("a red circle above a blue square", seed=0, n=2, **Q)
    _check_images(images, n=2)
    rec = json.loads(images[1].info["pintor"])
    assert rec["seed"] == 1 and rec["index"] == 1 and rec["request"]["prompt"] == "a red circle above a blue square"
    assert images[1].info["parameters"].startswith("a red circle above a blue square\n")
    assert "Seed: 1," in images[1].info["parameters"]


def test_same_seed_same_pixels_other_seed_differs(painter):
    a = painter.generate("a green star", seed=7, **Q)[0]
    b = painter.generate("a green star", seed=7, **Q)[0]
    c = painter.generate("a green star", seed=8, **Q)[0]
    assert np.array_equal(_arr(a), _arr(b))
    assert not np.array_equal(_arr(a), _arr(c))


def test_image_i_of_a_batch_is_reproducible_alone(painter):
    batch = painter.generate("a purple square", seed=10, n=2, **Q)
    alone = painter.generate("a purple square", seed=11, **Q)[0]
    # Per-image generators: image 1 of a batch seeded 10 draws the same noise as seed 11 alone.
    diff = np.abs(_arr(batch[1]) - _arr(alone))
    assert diff.max() <= 2


def test_random_seed_is_recorded(painter):
    img = painter.generate("a red circle", **Q)[0]
    seed = json.loads(img.info["pintor"])["seed"]
    again = painter.generate("a red circle", seed=seed, **Q)[0]
    assert np.array_equal(_arr(img), _arr(again))


def test_mix_images_and_texts(painter, rgb_png):
    out = painter.mix([rgb_png, "a blue square"], weights=[0.5, 0.5], seed=0, **Q)
    _check_images(out)
    out2 = painter.mix([str(rgb_png), Image.open(rgb_png)], weights=[1.0, 2.0], seed=0, **Q)
    _check_images(out2)
    # Weights move the embedding, so they change the picture.
    a = painter.mix([rgb_png, "a blue square"], weights=[1.0, 0.0], seed=0, **Q)[0]
    b = painter.mix([rgb_png, "a blue square"], weights=[0.0, 1.0], seed=0, **Q)[0]
    assert not np.array_equal(_arr(a), _arr(b))


@pytest.mark.parametrize("weights, match", [([1.0], "2 items but 1 weights"), ([1.0, float("nan")], "finite"),
                                             ([1.0, float("inf")], "finite")])
def test_mix_bad_weights(painter, rgb_png, weights, match):
    with pytest.raises(PintorError, match=match):
        painter.mix([rgb_png, "a cat"], weights=weights, **Q)


def test_img2img_strength(painter, rgb_png):
    out = painter.img2img(rgb_png, "a blue star", strength=0.3, steps=4, seed=0, **Q)
    _check_images(out)
    with pytest.raises(PintorError, match="strength"):
        painter.img2img(rgb_png, "a blue star", strength=1.5, **Q)
    with pytest.raises(PintorError, match="runs no denoising step"):
        painter.img2img(rgb_png, "a blue star", strength=0.3, steps=2, **Q)


def test_inpaint_keeps_pixels_outside_mask(painter, rgb_png, mask_png):
    out = painter.inpaint(rgb_png, mask_png, "a yellow square", seed=0, n=2, **Q)
    _check_images(out, n=2)
    src = _arr(Image.open(rgb_png).convert("RGB"))
    outside = np.asarray(Image.open(mask_png)) < 128
    for img in out:
        assert np.array_equal(_arr(img)[outside], src[outside])
        # Deep inside the mask the model repainted (random tiny weights: anything but the input).
        assert not np.array_equal(_arr(img)[24:40, 16:32], src[24:40, 16:32])


def test_control_with_depth_map(painter):
    depth = np.zeros((64, 64), np.uint8)
    depth[10:40, 10:40] = 200
    _check_images(painter.control(depth, "a red square", seed=0, **Q))
    a = painter.control(depth, "a red square", seed=0, **Q)[0]
    b = painter.control(np.flipud(depth).copy(), "a red square", seed=0, **Q)[0]
    assert not np.array_equal(_arr(a), _arr(b))  # the hint reaches the UNet


def test_control_estimates_depth_with_transformers_model(tiny_k22, tiny_dpt, rgb_png):
    p = pintor.load(tiny_k22, depth_estimator=str(tiny_dpt))
    _check_images(p.control(rgb_png, "a red circle", estimate_depth=True, seed=0, **Q))
    assert "depth_estimator" in p.components


def test_variations(painter, rgb_png):
    _check_images(painter.variations(rgb_png, seed=0, n=2, **Q), n=2)


def test_candidates_keep_the_one_nearest_the_embedding(painter, rgb_png):
    import torch

    # Variations paint every candidate from one embedding, the input's, so the pick can be checked by hand.
    drawn = painter.variations(rgb_png, seed=3, n=4, **Q)  # 2 images x 2 candidates: seeds 3, 4 | 5, 6
    result = painter.run(pintor.GenerationRequest(mode="variations", image=rgb_png, seed=3, n=2, candidates=2),
                         RunControl(show_progress=False))
    enc, proc = painter.components["prior.image_encoder"], painter.components["prior.image_processor"]
    with torch.no_grad():
        def embed(images):
            return enc(proc(images, return_tensors="pt").pixel_values)["image_embeds"]
        target = embed([Image.open(rgb_png).convert("RGB")])
        sims = torch.nn.functional.cosine_similarity(embed(drawn), target).tolist()
    for i, (img, rec) in enumerate(zip(result.images, result.records, strict=True)):
        best = max((i, i + 2), key=lambda k: sims[k])  # candidate j of image i is drawn i + j * n
        assert rec["candidate"]["seed"] == 3 + best and rec["candidate"]["of"] == 2
        assert rec["candidate"]["similarity"] == pytest.approx(sims[best], abs=1e-3)
        assert np.array_equal(_arr(img), _arr(drawn[best]))
        assert "Candidates: 2" in img.info["parameters"] and json.loads(img.info["pintor"])["candidate"] == rec["candidate"]
    # Candidate 0 is what `candidates=1` draws: a two-candidate image equals one of seeds 3 and 5 of one draw.
    one = painter.variations(rgb_png, seed=3, n=1, **Q)[0]
    assert np.abs(_arr(one) - _arr(drawn[0])).max() <= 2


def test_default_candidates_shrink_to_the_image_limit(tiny_k22, tmp_path):
    import shutil

    from pintor.request import Limits, candidates_that_fit

    path = tmp_path / "tiny-k22-c3"
    shutil.copytree(tiny_k22, path)
    meta = json.loads((path / "pintor.json").read_text())
    meta["defaults"]["candidates"] = 3
    (path / "pintor.json").write_text(json.dumps(meta))
    p = pintor.load(path, limits=Limits(max_n=8))
    assert p.prepare(pintor.GenerationRequest(prompt="a red circle", n=2)).candidates == 3
    assert p.prepare(pintor.GenerationRequest(prompt="a red circle", n=4)).candidates == 2
    assert p.prepare(pintor.GenerationRequest(prompt="a red circle", n=8)).candidates == 1
    images = p.generate("a red circle", seed=0, n=4, **Q)
    assert len(images) == 4 and json.loads(images[0].info["pintor"])["request"]["candidates"] == 2
    # The UI lowers its slider with the same rule.
    assert [candidates_that_fit(n, 3, 8) for n in (1, 2, 3, 4, 8)] == [3, 3, 2, 2, 1]
    # Asked for, candidates are the user's: too many is still an error that says so.
    with pytest.raises(PintorError, match="n x candidates is 12: at most 8"):
        p.prepare(pintor.GenerationRequest(prompt="a red circle", n=4, candidates=3))


def test_best_candidate_indices():
    from pintor.backends.kandinsky import best_candidate_indices

    # 2 images x 3 candidates: image 0 at 0, 2, 4; image 1 at 1, 3, 5.
    assert best_candidate_indices([0.1, 0.9, 0.5, 0.2, 0.3, 0.95], 2, 3) == [2, 5]
    assert best_candidate_indices([0.5, 0.5], 1, 2) == [0]  # a tie keeps the first
    with pytest.raises(ValueError, match="expected 2 x 3 = 6 scores, got 5"):
        best_candidate_indices([0.0] * 5, 2, 3)


@pytest.mark.parametrize("fields, match", [
    (dict(candidates=0), "candidates must be an integer from 1 to 16, got 0"),
    (dict(candidates=17), "candidates must be an integer from 1 to 16, got 17"),
    (dict(candidates=2.0), "candidates must be an integer"),
    (dict(candidates=8, n=9), "n x candidates is 72: at most 64 images"),
])
def test_bad_candidates(painter, fields, match):
    with pytest.raises(PintorError, match=match):
        painter.generate("a red circle", seed=0, **fields, **Q)


def test_modes_share_one_set_of_weights(tiny_k22, rgb_png, mask_png):
    p = pintor.load(tiny_k22)
    p.generate("a red circle", seed=0, **Q)
    p.img2img(rgb_png, "a red circle", seed=0, **Q)
    p.inpaint(rgb_png, mask_png, "a red circle", seed=0, **Q)
    p.control(np.zeros((64, 64), np.uint8), "a red circle", seed=0, **Q)
    p.mix([rgb_png, "a cat"], [0.5, 0.5], seed=0, **Q)
    pipes = [p.backend.pipeline(m) for m in ("generate", "img2img", "inpaint", "control")]
    assert len({id(pipe.movq) for pipe in pipes}) == 1
    assert pipes[0].unet is pipes[1].unet and pipes[2].unet is not pipes[0].unet
    comps = p.components
    assert comps["movq"] is pipes[0].movq
    # One CLIP and one prior, whichever modes ran: every module appears once.
    modules = [v for v in comps.values() if hasattr(v, "parameters")]
    assert len({id(m) for m in modules}) == len(modules)
    names = sorted(comps)
    assert names.count("prior.image_encoder") == 1 and names.count("prior.text_encoder") == 1


def test_missing_mode_lists_the_modes_it_has(tiny_k22_no_control):
    p = pintor.load(tiny_k22_no_control)
    assert "control" not in p.modes
    with pytest.raises(ModeNotSupportedError, match="its modes are generate, mix, img2img, inpaint, variations"):
        p.control(np.zeros((64, 64), np.uint8), "a red circle", **Q)


def test_size_rounding_and_limits(painter):
    img = painter.generate("a red circle", seed=0, width=72, height=64, **Q)[0]
    assert img.size == (128, 64)  # rounded up to the MoVQ's 64-pixel blocks
    for kw, match in [(dict(width=60), "multiple of 8"), (dict(width=56), "below the minimum"),
                      (dict(height=4096), "above the limit"), (dict(steps=0), "steps"), (dict(n=0), "n must")]:
        with pytest.raises(PintorError, match=match):
            painter.generate("a red circle", **kw, **Q)
    with pytest.raises(PintorError, match="prompt is empty"):
        painter.generate("  ", **Q)


def test_raised_size_limit(tiny_k22):
    from pintor.request import GenerationRequest, Limits

    GenerationRequest(prompt="x", width=4096).validate(Limits(max_size=4096))
    with pytest.raises(PintorError):
        GenerationRequest(prompt="x", width=4096).validate()


def test_bad_images(painter, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(PintorError, match="not found"):
        painter.img2img(tmp_path / "missing.png", "x", **Q)
    with pytest.raises(PintorError, match="not a readable image"):
        painter.img2img(tmp_path / "notes.png", "x", **Q)


def test_request_json_round_trip(rgb_png):
    from pintor.request import GenerationRequest

    req = GenerationRequest(mode="mix", items=[rgb_png, "a tiger"], weights=[0.3, 0.7], seed=5, steps=3)
    back = GenerationRequest.from_json(json.loads(json.dumps(req.to_json())))
    assert back.items[1] == "a tiger" and str(back.items[0]) == str(rgb_png.resolve())
    assert (back.weights, back.seed, back.steps, back.mode) == ([0.3, 0.7], 5, 3, "mix")


def test_unknown_model_and_missing_folder(tmp_path):
    with pytest.raises(PintorError, match="unknown model 'nope'"):
        pintor.load("nope")
    with pytest.raises(PintorError, match="not found"):
        pintor.load(tmp_path / "absent")
    with pytest.raises(PintorError, match="not a Kandinsky 2.2 model folder"):
        pintor.load(tmp_path)


def test_missing_hub_weights_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(PintorError) as e:
        pintor.load("kandinsky-2.2")
    msg = str(e.value)
    assert "kandinsky-community/kandinsky-2-2-prior" in msg and "pintor download kandinsky-2.2" in msg
    assert "\n" not in msg


def test_save_image_writes_both_chunks(painter, tmp_path):
    img = painter.generate("a red circle", seed=3, **Q)[0]
    pintor.save_image(img, tmp_path / "x.png")
    meta = pintor.read_metadata(tmp_path / "x.png")
    assert meta["pintor"]["seed"] == 3 and "Steps: 2" in meta["parameters"]
    assert np.array_equal(_arr(Image.open(tmp_path / "x.png").convert("RGB")), _arr(img))


def test_negative_prompt_with_several_images(painter):
    a = painter.generate("a red circle", negative_prompt="a blue square", n=2, seed=4, **Q)
    _check_images(a, n=2)
    b = painter.generate("a red circle", negative_prompt="a blue square", n=2, seed=4, **Q)
    assert all(np.array_equal(_arr(x), _arr(y)) for x, y in zip(a, b, strict=True))
    mixed = painter.mix(["a red circle", "a blue square"], [0.5, 0.5], negative_prompt="a star", n=2, seed=4, **Q)
    _check_images(mixed, n=2)


def test_a_request_scheduler_does_not_become_the_default(tiny_k22):
    p = pintor.load(tiny_k22)
    first = json.loads(p.generate("a red circle", seed=0, **Q)[0].info["pintor"])["request"]["scheduler"]
    p.generate("a red circle", seed=0, scheduler="euler-a", **Q)
    after = json.loads(p.generate("a red circle", seed=0, **Q)[0].info["pintor"])["request"]["scheduler"]
    assert first == after == "ddpm"


def test_out_of_memory_becomes_one_line_with_advice():
    import torch

    from pintor.backends.common import oom_as_error
    from pintor.errors import OutOfMemoryError

    with pytest.raises(OutOfMemoryError, match="--low-vram") as e:
        with oom_as_error():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_runs_every_sampling_mode(painter, name):
    if name == "heun":
        with pytest.raises(PintorError, match="scheduler 'heun' does not run with this model's pipelines yet"):
            painter.generate("a red circle", seed=1, scheduler=name, **Q)
        return
    # Kandinsky pipelines pass `generator=` to scheduler.step; UniPC's step once raised a TypeError on it.
    img = painter.generate("a red circle", seed=1, scheduler=name, **Q)
    _check_images(img)
    _check_images(painter.img2img(img[0], "a blue square", strength=0.6, seed=1, scheduler=name, **Q))
    again = painter.generate("a red circle", seed=1, scheduler=name, **Q)
    assert np.array_equal(_arr(img[0]), _arr(again[0]))
    meta = json.loads(img[0].info["pintor"])["request"]
    assert meta["scheduler"] == name
