"""Full-size Kandinsky 2.x with random weights, from the configs shipped in `pintor/configs/`.

Speed and memory do not depend on weight values, so a randomly initialised model of the published
architecture measures them wherever hub weights are unavailable. `parameter_counts` builds each
component on the meta device (no memory) to check the architecture against the published sizes;
`ensure_random_model` writes a model folder that `pintor.load` and stock diffusers both open.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

# role -> (library, class, config file suffix); the pipelines' component names.
COMPONENTS = {
    "kandinsky-2.2": {
        "prior": ("diffusers", "PriorTransformer", "prior"),
        "text_encoder": ("transformers", "CLIPTextModelWithProjection", "text_encoder"),
        "image_encoder": ("transformers", "CLIPVisionModelWithProjection", "image_encoder"),
        "unet": ("diffusers", "UNet2DConditionModel", "unet"),
        "movq": ("diffusers", "VQModel", "movq"),
    },
    "kandinsky-2.1": {
        "prior": ("diffusers", "PriorTransformer", "prior"),
        "text_encoder": ("transformers", "CLIPTextModelWithProjection", "text_encoder"),
        "image_encoder": ("transformers", "CLIPVisionModelWithProjection", "image_encoder"),
        "mclip": ("kandinsky", "MultilingualCLIP", "text_encoder_mclip"),
        "unet": ("diffusers", "UNet2DConditionModel", "unet"),
        "movq": ("diffusers", "VQModel", "movq"),
    },
}

# Published parameter counts (the ai-forever/Kandinsky-2 model cards), in parameters. Kandinsky 2.1's
# "CLIP image encoder (ViT-L/14) - 427M" is the whole CLIP: its text and image towers together.
PUBLISHED = {
    "kandinsky-2.2": {"prior": 1.0e9, "image_encoder": 1.8e9, "unet": 1.22e9, "movq": 67e6},
    "kandinsky-2.1": {"prior": 1.0e9, "text_encoder+image_encoder": 427e6, "mclip": 560e6, "unet": 1.22e9,
                      "movq": 67e6},
}

RANDOM_MODELS = ("kandinsky-2.2", "kandinsky-2.1", "pintor-shapes")


def load_config(model: str, part: str) -> dict:
    """The shipped JSON config of one component (`part`: prior, unet, movq, text_encoder, scheduler...)."""
    name = f"{model}-{part}.json"
    try:
        text = resources.files("pintor").joinpath("configs", name).read_text()
    except FileNotFoundError:
        from pintor.errors import PintorError

        raise PintorError(f"no shipped config {name}: random weights exist for {', '.join(COMPONENTS)}") from None
    return json.loads(text)


def build_component(model: str, role: str, tokenizer=None, overrides: dict | None = None):
    """Builds one component from its shipped config, with default initialisation, on the current default device
    (use `with torch.device("meta"):` to build it without memory). `overrides` changes config keys (tests)."""
    library, cls_name, part = COMPONENTS[model][role]
    cfg = dict(load_config(model, part), **(overrides or {}))
    if library == "diffusers":
        import diffusers

        cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
        return getattr(diffusers, cls_name)(**cfg)
    cfg = {k: v for k, v in cfg.items() if k != "architectures"}
    if tokenizer is not None and library == "transformers":
        cfg.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    if library == "kandinsky":
        from diffusers.pipelines.kandinsky.text_encoder import MCLIPConfig, MultilingualCLIP

        cfg.pop("model_type", None)
        return MultilingualCLIP(MCLIPConfig(**cfg))
    import transformers

    config_cls = transformers.CLIPTextConfig if "Text" in cls_name else transformers.CLIPVisionConfig
    cfg.pop("model_type", None)
    return getattr(transformers, cls_name)(config_cls(**cfg))


def parameter_counts(model: str) -> dict[str, int]:
    """Parameters of each component of `model`, counted on the meta device (no memory, no time)."""
    import torch

    counts = {}
    with torch.device("meta"):
        for role in COMPONENTS[model]:
            m = build_component(model, role)
            counts[role] = sum(p.numel() for p in m.parameters())
            del m
    return counts


def published_check(model: str, tolerance: float = 0.05) -> dict[str, dict]:
    """Each published size against the built architecture: {name: {published, built, rel_error, ok}}."""
    counts = parameter_counts(model)
    out = {}
    for name, published in PUBLISHED[model].items():
        built = sum(counts[r] for r in name.split("+"))
        err = built / published - 1
        out[name] = {"published": published, "built": built, "rel_error": err, "ok": abs(err) <= tolerance}
    return out


def materialize(module, device, dtype, seed: int = 0):
    """Gives a module built on the meta device real storage on `device` and a cheap random initialisation:
    each layer's own `reset_parameters` (PyTorch's default init), N(0, 0.02) for bare parameters and ones for
    standard deviations. Buffers come back uninitialised: `build_random` restores them."""
    import torch

    torch.manual_seed(seed)
    reset = set()
    module.to_empty(device=device)
    with torch.no_grad():
        for sub in module.modules():
            if hasattr(sub, "reset_parameters") and callable(sub.reset_parameters):
                try:
                    sub.reset_parameters()
                except (TypeError, NotImplementedError):
                    continue
                reset.update(id(p) for p in sub.parameters(recurse=False))
        for name, p in module.named_parameters():
            if id(p) in reset:
                continue
            if "std" in name.rsplit(".", 1)[-1]:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    return module.to(dtype=dtype) if dtype is not None else module


def build_random(model: str, role: str, device, dtype, tokenizer=None, seed: int = 0, overrides: dict | None = None):
    """A real, randomly initialised component: built on meta, materialised on `device`, cast to `dtype`."""
    import torch
    from accelerate import init_empty_weights

    # Parameters on meta (no memory, no init time); buffers (position ids...) real, to restore after `to_empty`.
    with init_empty_weights(include_buffers=False):
        m = build_component(model, role, tokenizer, overrides)
    buffers = {n: b.clone() for n, b in m.named_buffers()}
    materialize(m, device, None, seed)
    with torch.no_grad():
        for name, b in m.named_buffers():
            if name in buffers:
                b.copy_(buffers[name].to(b.device))
    return m.to(dtype=dtype).eval()


def default_root() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pintor" / "random-weights"


def ensure_random_model(model: str, dtype: str = "float16", root: str | Path | None = None, *,
                        device: str | None = None, overrides: dict | None = None, log=None) -> Path:
    """Writes (once) a folder with `model`'s full architecture and random weights, in `pintor.load` layout.

    Args:
        model (`str`): "kandinsky-2.2", "kandinsky-2.1" or "pintor-shapes".
        dtype (`str`): storage dtype; float16 halves the disk and load time.
        root (`str` or `Path`, *optional*): parent folder; ~/.cache/pintor/random-weights by default.
        device (`str`, *optional*): where to initialise the weights (cuda is much faster for 5B parameters).
        overrides (`dict`, *optional*): {role: {config key: value}} to shrink components (tests).
    """
    import torch

    if model not in RANDOM_MODELS:
        from pintor.errors import PintorError

        raise PintorError(f"random weights exist for {', '.join(RANDOM_MODELS)}, not {model!r}")
    tag = "" if not overrides else "-" + _digest(overrides)
    path = Path(root or default_root()) / f"{model}-{dtype}{tag}"
    if (path / "pintor.json").is_file():
        return path
    log = log or (lambda msg: None)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    torch_dtype = getattr(torch, dtype)
    if model == "pintor-shapes":
        from pintor.architectures import SHAPES, build_kandinsky22, save_kandinsky22
        from pintor.registry import REGISTRY

        save_kandinsky22(build_kandinsky22(SHAPES, seed=0), tmp, name="random-pintor-shapes",
                         defaults=dict(REGISTRY["pintor-shapes"].defaults), fp16=dtype == "float16")
        _mark_random(tmp, model)
        tmp.rename(path)
        return path
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    _write_kandinsky(model, tmp, device, torch_dtype, overrides or {}, log)
    tmp.rename(path)
    return path


def _digest(d) -> str:
    import hashlib

    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]


def _mark_random(path: Path, model: str) -> None:
    meta_path = path / "pintor.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.update(random_weights=True, architecture=model)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")


def _write_kandinsky(model: str, path: Path, device, dtype, overrides: dict, log) -> None:
    import diffusers
    import torch
    from transformers import CLIPImageProcessor

    from pintor.data.vocabulary import WORDS
    from pintor.registry import FAMILY_DEFAULTS
    from pintor.tokenizer import build_clip_tokenizer

    def part(role):
        log(f"random {model} {role}")
        m = build_random(model, role, device, dtype, tokenizer=tok, overrides=overrides.get(role))
        return m.to("cpu")

    def scheduler(name):
        cfg = load_config(model, name)
        return getattr(diffusers, cfg["_class_name"]).from_config(cfg)

    tok = build_clip_tokenizer(list(WORDS), model_max_length=77)
    proc_cfg = {k: v for k, v in load_config(model, "image_processor").items() if k != "image_processor_type"}
    prior_cls = diffusers.KandinskyV22PriorPipeline if model == "kandinsky-2.2" else diffusers.KandinskyPriorPipeline
    prior = prior_cls(prior=part("prior"), image_encoder=part("image_encoder"), text_encoder=part("text_encoder"),
                      tokenizer=tok, scheduler=scheduler("prior_scheduler"),
                      image_processor=CLIPImageProcessor(**proc_cfg))
    prior.save_pretrained(path / "prior", safe_serialization=True)
    del prior
    if model == "kandinsky-2.2":
        decoder = diffusers.KandinskyV22Pipeline(unet=part("unet"), scheduler=scheduler("scheduler"), movq=part("movq"))
    else:
        decoder = diffusers.KandinskyPipeline(text_encoder=part("mclip"), tokenizer=tok, unet=part("unet"),
                                              scheduler=scheduler("scheduler"), movq=part("movq"))
    decoder.save_pretrained(path / "decoder", safe_serialization=True)
    del decoder
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    defaults = dict(FAMILY_DEFAULTS[model])
    meta = {"name": f"random-{model}", "family": model, "defaults": defaults}
    (path / "pintor.json").write_text(json.dumps(meta, indent=2) + "\n")
    _mark_random(path, model)
