"""Exporting a model from an unfinished `train_shapes` run: finished stages, plus the newest checkpoint of the rest.

A from-scratch run takes longer than some sessions last; a snapshot gives a usable model at any point
(text to image needs CLIP, MoVQ, prior and decoder; inpainting and the depth ControlNet join when their
stages have started) and records exactly how far each stage got.
"""

from __future__ import annotations

import json
from pathlib import Path

from pintor.training.loop import list_checkpoints, load_weights

REQUIRED = ("clip", "movq", "prior", "decoder")


def _stage_state(work: Path, stage: str) -> tuple[str, Path | None, int | None]:
    final = work / stage / "final"
    if (final / "done.json").is_file():
        return "done", final, None
    ckpts = list_checkpoints(work / stage / "checkpoints")
    if ckpts:
        state = json.loads((ckpts[-1] / "state.json").read_text())
        return "checkpoint", ckpts[-1], int(state["step"])
    return "missing", None, None


def snapshot_shapes(run_dir: str | Path, out_dir: str | Path, *, min_fraction: float = 0.0, defaults=None) -> Path:
    """Saves a loadable model from a `train_shapes` run directory, finished or not.

    Args:
        run_dir (`str` or `Path`): the `--out` folder of `pintor train shapes` (holds `work/`).
        out_dir (`str` or `Path`): where to write the model (diffusers layout, fp16 safetensors).
        min_fraction (`float`): leave out an optional stage (inpaint, controlnet) whose checkpoint has done
            less than this fraction of its planned steps.
        defaults (`dict`, *optional*): default generation settings for `pintor.json`.
    """
    from diffusers import PriorTransformer, UNet2DConditionModel, VQModel
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    from pintor.architectures import Kandinsky22Sizes, build_kandinsky22, build_unet, save_kandinsky22
    from pintor.training.shapes import DEFAULTS, STAGES

    work = Path(run_dir) / "work"
    run = json.loads((work / "run.json").read_text())
    sizes = Kandinsky22Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in run["sizes"].items()})
    c = build_kandinsky22(sizes, seed=run["seed"])
    report = {}
    for stage in STAGES:
        planned = run["plan"].get(f"{stage}_steps")
        if stage == "refine" and not planned:
            continue
        status, path, step = _stage_state(work, stage)
        report[stage] = {"status": status, "step": planned if status == "done" else step, "planned": planned}
        if status == "missing" or (status == "checkpoint" and stage == "clip"):
            if stage in REQUIRED:
                raise ValueError(f"stage {stage} of {run_dir} has no {'final weights' if stage == 'clip' else 'weights'}"
                                 " yet: nothing loadable to export")
            continue
        if stage in ("inpaint", "controlnet") and status == "checkpoint" and step / planned < min_fraction:
            report[stage]["status"] = f"left out ({step}/{planned} steps)"
            continue
        if stage == "clip":
            c.text_encoder = CLIPTextModelWithProjection.from_pretrained(path / "text_encoder")
            c.image_encoder = CLIPVisionModelWithProjection.from_pretrained(path / "image_encoder")
        elif status == "done":
            cls = {"movq": VQModel, "prior": PriorTransformer}.get(stage, UNet2DConditionModel)
            module = cls.from_pretrained(path)
            _assign(c, stage, module)
        else:
            if stage in ("inpaint", "controlnet"):
                module = build_unet(sizes, stage)
            else:
                # A refine checkpoint continues the decoder: same architecture.
                module = {"movq": c.movq, "prior": c.prior, "decoder": c.unet, "refine": c.unet}[stage]
            _assign(c, stage, load_weights(path, module, ema=True))
    for stage, attr in (("inpaint", "inpaint_unet"), ("controlnet", "controlnet_unet")):
        if report[stage]["status"] not in ("done", "checkpoint"):
            setattr(c, attr, None)
    c.extra = {"negative_image_embeds": "zero-image",
               "training": {"seed": run["seed"], "plan": run["plan"], "stages": report,
                            "snapshot": any(v["status"] != "done" for v in report.values())}}
    return save_kandinsky22(c, out_dir, name="pintor-shapes", fp16=True, defaults=defaults or DEFAULTS)


def _assign(c, stage: str, module) -> None:
    attr = {"movq": "movq", "prior": "prior", "decoder": "unet", "refine": "unet", "inpaint": "inpaint_unet",
            "controlnet": "controlnet_unet"}[stage]
    setattr(c, attr, module)
