"""The shipped pintor-shapes model: it loads offline from package data, runs its modes, and keeps the quality
measured by `pintor eval` (see README), with an honest margin."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pintor
from pintor.eval.detector import judge
from pintor.registry import embedded_path

# Measured with `pintor eval --n 16` on the shipped weights (eval-results/eval.json, README); the test asserts
# a floor well under it so seed-level noise on a small fixed set does not flip it.
MEASURED = json.loads((embedded_path() / "pintor.json").read_text()).get("eval", {}) \
    if (embedded_path() / "pintor.json").is_file() else {}


@pytest.fixture(scope="module")
def shapes():
    return pintor.load()


def test_embedded_model_ships_in_the_package(shapes):
    files = list(embedded_path().rglob("*.safetensors"))
    assert files and not list(embedded_path().rglob("*.bin")) and not list(embedded_path().rglob("*.pt"))
    assert sum(f.stat().st_size for f in files) <= 30e6
    assert shapes.spec.name == "pintor-shapes" and {"generate", "mix", "variations"} <= set(shapes.modes)


def test_embedded_generates_a_128px_image_with_objects(shapes):
    img = shapes.generate("a red circle", seed=0, show_progress=False)[0]
    assert img.size == (128, 128)
    a = np.asarray(img, dtype=np.float32)
    assert a.std() > 10  # not a flat canvas: something is drawn on the background


@pytest.mark.slow
def test_embedded_accuracy_on_a_fixed_prompt_set(shapes):
    floor = MEASURED.get("single_seen_floor")
    if floor is None:
        pytest.skip("no measured accuracy recorded in the shipped pintor.json")
    prompts = ["a red circle", "a blue square", "a green star", "an orange triangle", "a purple circle",
               "a yellow square", "a red square", "a blue star"]
    correct = [judge(shapes.generate(p, seed=i, show_progress=False)[0], p).correct for i, p in enumerate(prompts)]
    assert np.mean(correct) >= floor
