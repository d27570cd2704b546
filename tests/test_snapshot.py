"""Exporting a model from an unfinished `train_shapes` run."""

from __future__ import annotations

import json
import shutil

import pytest

import pintor
from pintor.architectures import TINY


@pytest.mark.slow
def test_snapshot_of_an_unfinished_run_loads_with_the_modes_it_has(tmp_path):
    from pintor.training.shapes import STAGES, ShapesPlan, train_shapes
    from pintor.training.snapshot import snapshot_shapes

    plan = ShapesPlan(pool_size=24, **{f"{s}_steps": 4 for s in STAGES}, **{f"{s}_batch": 4 for s in STAGES})
    plan.decoder_steps = 8
    run = tmp_path / "run"
    train_shapes(run, sizes=TINY, plan=plan, progress=False)
    work = run / "work"
    # Pretend the run stopped inside the decoder stage: its final export and the later stages are gone.
    for stage in ("refine", "inpaint", "controlnet"):
        shutil.rmtree(work / stage)
    shutil.rmtree(work / "decoder" / "final")
    ckpts = sorted((work / "decoder" / "checkpoints").iterdir())
    assert ckpts, "the decoder stage keeps checkpoints"
    out = snapshot_shapes(run, tmp_path / "model")
    meta = json.loads((out / "pintor.json").read_text())
    stages = meta["training"]["stages"]
    assert stages["decoder"]["status"] == "checkpoint" and stages["inpaint"]["status"] == "missing"
    assert meta["training"]["snapshot"] is True
    p = pintor.load(out)
    assert p.modes == ("generate", "mix", "img2img", "variations")
    img = p.generate("a red circle", seed=0, show_progress=False)[0]
    assert img.size == (128, 128)


def test_snapshot_needs_the_required_stages(tmp_path):
    from pintor.training.snapshot import snapshot_shapes

    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "run.json").write_text(json.dumps({"seed": 0, "plan": {"clip_steps": 4},
                                                           "sizes": {}}))
    with pytest.raises(ValueError, match="stage clip .* has no final weights"):
        snapshot_shapes(tmp_path, tmp_path / "model")
    assert TINY.embed_dim > 0
