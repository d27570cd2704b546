"""Speed and memory options, each one switchable, measured by `pintor bench`.

`Optimizations` says which to use; `optimize_module` applies them to one loaded module and `place`
puts a pipeline on its device (or offloads it). Exact options change the arithmetic only (same
function, other kernels or layouts); step-changing ones (`deepcache_interval`, `prior_scheduler`)
trade fidelity for speed and are judged with `pintor eval`.

```py
>>> import pintor
>>> from pintor.optim import Optimizations
>>> painter = pintor.load("kandinsky-2.2", optimizations=Optimizations(compile=True, fuse_qkv=True))
```
Only `torch` is imported on use, so this module is cheap to import.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

# Options whose effect on pixels is rounding only; `pintor bench` checks them against PSNR 30 dB.
EXACT_OPTIONS = ("sdpa", "channels_last", "compile", "fuse_qkv", "cuda_graphs", "cudnn_benchmark", "embed_cache",
                 "batching", "movq_slicing")
COMPILE_ROLES = ("unet", "prior", "movq")
# Options that change the computation; `pintor eval` must stay within 1 point of 50-step stock.
STEP_CHANGING_OPTIONS = ("deepcache_interval", "prior_scheduler", "movq_tiling", "quantize")


@dataclass(frozen=True)
class Optimizations:
    """Which speed and memory optimisations a `Painter` uses.

    Args:
        sdpa (`bool`): PyTorch's fused scaled-dot-product attention (else the classic matmul-softmax processors).
        channels_last (`bool`): NHWC memory layout for the UNet and MoVQ convolutions.
        compile (`bool`): `torch.compile` the UNet, prior transformer and MoVQ decoder. The first call of each
            shape compiles (minutes on a GPU); later processes reuse the on-disk cache.
        compile_mode (`str`, *optional*): `torch.compile` mode; default "reduce-overhead" with `cuda_graphs`,
            else "default".
        compile_modules (`str`): which of "unet", "prior" and "movq" `compile` compiles, joined by "+". The UNet
            takes most of an image's time; on a CPU, where inductor builds C++ kernels, compiling it alone costs
            about 40% of compiling all three.
        fuse_qkv (`bool`): one matmul for the query, key and value projections (and one for the added keys
            and values of Kandinsky's UNet attention).
        cuda_graphs (`bool`): replay CUDA graphs of the compiled modules (implies `compile`; CUDA only). With
            DeepCache the UNet's blocks are compiled without graphs (their outputs must outlive later calls).
        cudnn_benchmark (`bool`): let cuDNN time its convolution algorithms for each shape once (CUDA only;
            a process-wide setting).
        embed_cache (`bool`): memoise prior outputs of repeated (prompt, settings, seed) and CLIP image
            embeddings of repeated mix items; outputs are unchanged.
        cache_size (`int`): entries kept by the embedding cache.
        batching (`bool`): `Painter.run_batch` runs compatible text-to-image requests in one pipeline call.
        deepcache_interval (`int`): DeepCache-style reuse: the whole UNet runs every this many decoder steps, the
            steps between run only its outer `deepcache_depth` levels over cached deeper features. 0 or 1: off.
        deepcache_depth (`int`): how many outer UNet levels are recomputed on reuse steps.
        prior_scheduler (`str`, *optional*): "ddim" replaces the prior's UnCLIP sampler (for fewer prior steps).
        attention_slicing (`bool`, *optional*): sliced attention; default: only under low/lowest VRAM without SDPA
            (SDPA's memory-efficient kernels already avoid the quadratic buffer).
        movq_slicing (`bool`, *optional*): decode one image at a time; default: on under low/lowest VRAM.
        movq_tiling (`bool`, *optional*): decode latents larger than `movq_tile` pixels in overlapping tiles;
            default: on under low/lowest VRAM.
        movq_tile (`int`): tile size in pixels for `movq_tiling`.
        lazy_image_encoder (`bool`, *optional*): load the CLIP image encoder only when a mode needs it (mix with
            images, variations); default: on under low/lowest VRAM.
        quantize (`str`, *optional*): "int8" (weight-only), "int8-dynamic" or "fp8" weights of the UNet and
            prior linear layers through torchao.
    """

    sdpa: bool = True
    channels_last: bool = False
    compile: bool = False
    compile_mode: str | None = None
    compile_modules: str = "unet+prior+movq"
    fuse_qkv: bool = False
    cuda_graphs: bool = False
    cudnn_benchmark: bool = False
    embed_cache: bool = True
    cache_size: int = 64
    batching: bool = True
    deepcache_interval: int = 0
    deepcache_depth: int = 1
    prior_scheduler: str | None = None
    attention_slicing: bool | None = None
    movq_slicing: bool | None = None
    movq_tiling: bool | None = None
    movq_tile: int = 1024
    lazy_image_encoder: bool | None = None
    quantize: str | None = None

    def __post_init__(self):
        if self.deepcache_interval < 0 or self.deepcache_depth < 1:
            raise ValueError("deepcache_interval must be >= 0 and deepcache_depth >= 1")
        if self.prior_scheduler not in (None, "ddim", "unclip"):
            raise ValueError(f"prior_scheduler must be 'ddim' or 'unclip', got {self.prior_scheduler!r}")
        if self.quantize not in (None, "int8", "int8-dynamic", "fp8"):
            raise ValueError(f"quantize must be 'int8', 'int8-dynamic' or 'fp8', got {self.quantize!r}")
        roles = self.compile_modules.split("+")
        if not self.compile_modules or any(r not in COMPILE_ROLES for r in roles) or len(set(roles)) < len(roles):
            raise ValueError(f"compile_modules must be some of {'+'.join(COMPILE_ROLES)} joined by '+', got "
                             f"{self.compile_modules!r}")
        if self.movq_tile < 128 or self.movq_tile % 64:
            raise ValueError(f"movq_tile must be a multiple of 64 of at least 128, got {self.movq_tile}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def resolved(self, device: str, low_vram: bool = False, lowest_vram: bool = False) -> Optimizations:
        """Fills the automatic (`None`) choices for a device and memory mode; drops what cannot apply there."""
        offload = (low_vram or lowest_vram) and device != "cpu"
        memory_mode = low_vram or lowest_vram
        cuda = device.startswith("cuda")
        updates: dict[str, Any] = {}
        if self.attention_slicing is None:
            updates["attention_slicing"] = memory_mode and not self.sdpa
        if self.movq_slicing is None:
            updates["movq_slicing"] = memory_mode
        if self.movq_tiling is None:
            updates["movq_tiling"] = memory_mode
        if self.lazy_image_encoder is None:
            updates["lazy_image_encoder"] = memory_mode
        if not cuda:
            updates["cuda_graphs"] = False
        if self.cuda_graphs and cuda:
            updates["compile"] = True
        if offload:
            # Offload hooks move weights inside forward: graphs and compiled kernels would capture stale pointers.
            updates.update(compile=False, cuda_graphs=False)
        return replace(self, **updates)

    @classmethod
    def parse(cls, spec: str | None, base: Optimizations | None = None) -> Optimizations:
        """Parses "compile,fuse_qkv,deepcache_interval=3,-sdpa,prior_scheduler=ddim" over `base` (or defaults).

        A bare name switches a boolean on, `-name` off; `name=value` sets any option ("none" for `None`).
        """
        opts = base or cls()
        if not spec:
            return opts
        types = {f.name: f.type for f in fields(cls)}
        aliases = {"deepcache": "deepcache_interval", "graphs": "cuda_graphs", "cache": "embed_cache"}
        updates: dict[str, Any] = {}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, _, value = part.partition("=")
            off = name.startswith("-")
            name = aliases.get(name.lstrip("-+"), name.lstrip("-+"))
            if name not in types:
                raise ValueError(f"unknown optimisation {name!r}: expected some of {', '.join(types)}")
            kind = str(types[name])
            if not value:
                if "bool" not in kind:
                    raise ValueError(f"{name} takes a value: {name}=...")
                updates[name] = not off
            elif value.lower() in ("none", "auto"):
                updates[name] = None
            elif "bool" in kind:
                updates[name] = value.lower() in ("1", "true", "yes", "on")
            elif "int" in kind:
                updates[name] = int(value)
            else:
                updates[name] = value
        return replace(opts, **updates)


def default_optimizations(device: str | None = None) -> Optimizations:
    """The options `pintor.load` uses when given none: only those that are exact and measured to win on `device`.

    Until `pintor bench` has measured the others on a device they stay off: SDPA attention and the
    embedding cache are exact and never slower, so they are the default everywhere. `$PINTOR_OPTIMIZATIONS`
    (the `Optimizations.parse` syntax, e.g. "compile,fuse_qkv") changes them for every load in a process, which
    is how `pintor bench` times a cold `pintor generate` with the options it measures.
    """
    return Optimizations.parse(os.environ.get("PINTOR_OPTIMIZATIONS"))


# -- applying options to modules ------------------------------------------------------------------------------
_APPLIED = "_pintor_optimizations"


def optimize_module(module, opts: Optimizations, device: str, role: str) -> None:
    """Applies `opts` to one module in place, once; `role` is "unet", "prior", "movq", "text_encoder" or
    "image_encoder". Call it before `place`, since offload hooks are attached to the modules they find."""
    if module is None or getattr(module, _APPLIED, None) is not None:
        return
    import torch

    if not opts.sdpa:
        _classic_attention(module)
    if opts.fuse_qkv and role in ("unet", "prior"):
        fuse_qkv(module)
    if opts.channels_last and role in ("unet", "movq"):
        module.to(memory_format=torch.channels_last)
    if opts.quantize and role in ("unet", "prior"):
        quantize(module, opts.quantize)
    if role == "unet" and opts.deepcache_interval > 1:
        enable_deepcache(module, opts.deepcache_interval, opts.deepcache_depth)
    if opts.cudnn_benchmark and device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    if opts.compile and role in opts.compile_modules.split("+"):
        compile_module(module, opts, role)
    if role == "movq" and (opts.movq_slicing or opts.movq_tiling):
        _wrap_movq_decode(module, slicing=bool(opts.movq_slicing), tile=opts.movq_tile if opts.movq_tiling else 0)
    object.__setattr__(module, _APPLIED, opts)


def _classic_attention(module) -> None:
    # Diffusers picks the SDPA processors when torch has SDPA; its "default" processors are the classic ones.
    if hasattr(module, "set_default_attn_processor") and getattr(module, "attn_processors", None):
        module.set_default_attn_processor()
    elif hasattr(module, "set_attn_implementation"):  # transformers models
        module.set_attn_implementation("eager")


# -- fused projections ----------------------------------------------------------------------------------------
class FusedAddedKVAttnProcessor:
    """`AttnAddedKVProcessor2_0` (Kandinsky's UNet attention) with fused projections: one matmul gives the query,
    key and value of the image tokens, one gives the added key and value of the conditioning tokens."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        import torch
        import torch.nn.functional as F

        residual = hidden_states
        hidden_states = hidden_states.view(hidden_states.shape[0], hidden_states.shape[1], -1).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size, out_dim=4)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        added_key, added_value = attn.pintor_added_kv(encoder_hidden_states).chunk(2, dim=-1)
        added_key = attn.head_to_batch_dim(added_key, out_dim=4)
        added_value = attn.head_to_batch_dim(added_value, out_dim=4)
        if attn.only_cross_attention:
            query = attn.head_to_batch_dim(attn.to_q(hidden_states), out_dim=4)
            key, value = added_key, added_value
        else:
            query, key, value = attn.pintor_qkv(hidden_states).chunk(3, dim=-1)
            query = attn.head_to_batch_dim(query, out_dim=4)
            key = torch.cat([added_key, attn.head_to_batch_dim(key, out_dim=4)], dim=2)
            value = torch.cat([added_value, attn.head_to_batch_dim(value, out_dim=4)], dim=2)

        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                       is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, residual.shape[1])
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        hidden_states = hidden_states.transpose(-1, -2).reshape(residual.shape)
        return hidden_states + residual


def _fused_linear(linears):
    import torch
    from torch import nn

    first = linears[0]
    bias = first.bias is not None
    fused = nn.Linear(first.in_features, sum(lin.out_features for lin in linears), bias=bias,
                      device=first.weight.device, dtype=first.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([lin.weight for lin in linears]))
        if bias:
            fused.bias.copy_(torch.cat([lin.bias for lin in linears]))
    return fused


def fuse_qkv(module) -> int:
    """Fuses the attention projections of a diffusers model in place; returns how many attentions were fused.

    Kandinsky's UNet attention (added K/V) gets `FusedAddedKVAttnProcessor`; plain self-attention (the prior)
    gets diffusers' `FusedAttnProcessor2_0`. The unfused weights stay, so other processors still work.
    """
    from diffusers.models.attention_processor import (
        Attention,
        AttnAddedKVProcessor2_0,
        AttnProcessor2_0,
        FusedAttnProcessor2_0,
    )

    n = 0
    for attn in module.modules():
        if not isinstance(attn, Attention):
            continue
        proc = attn.processor
        if isinstance(proc, AttnAddedKVProcessor2_0) and attn.add_k_proj is not None and attn.group_norm is not None:
            if not attn.only_cross_attention:
                attn.pintor_qkv = _fused_linear([attn.to_q, attn.to_k, attn.to_v])
            attn.pintor_added_kv = _fused_linear([attn.add_k_proj, attn.add_v_proj])
            attn.set_processor(FusedAddedKVAttnProcessor())
            n += 1
        elif (isinstance(proc, AttnProcessor2_0) and not attn.is_cross_attention and attn.spatial_norm is None
              and getattr(attn, "add_k_proj", None) is None):
            attn.to_qkv = _fused_linear([attn.to_q, attn.to_k, attn.to_v])
            attn.fused_projections = True
            attn.set_processor(FusedAttnProcessor2_0())
            n += 1
    return n


# -- torch.compile and CUDA graphs ------------------------------------------------------------------------------
def compile_cache_dir() -> str:
    """Where inductor keeps compiled kernels: `$TORCHINDUCTOR_CACHE_DIR`, else ~/.cache/pintor/inductor, so that a
    second process (or a reboot, which empties /tmp) starts with a warm cache."""
    d = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "pintor", "inductor")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = d
    return d


def compile_module(module, opts: Optimizations, role: str) -> None:
    """Compiles `module`'s forward (or, for a DeepCache UNet, each of its blocks) in place.

    Only `forward` is compiled, not `__call__`: module hooks (offload, timing) stay outside the graph.
    """
    import torch

    compile_cache_dir()
    mode = opts.compile_mode or ("reduce-overhead" if opts.cuda_graphs else "default")
    kw = dict(mode=mode, dynamic=False, fullgraph=False)
    if role == "movq":
        module.decoder.forward = torch.compile(module.decoder.forward, **kw)
    elif role == "unet" and getattr(module, "pintor_deepcache", None) is not None:
        # DeepCache's step logic is Python; compile the blocks it calls, each one a graph. Not as CUDA graphs:
        # in inference every call of a graphed function may reuse the buffers of the previous one's outputs,
        # and a block's skip outputs must live until its up-block runs.
        if kw["mode"] == "reduce-overhead":
            kw["mode"] = "default"
        for block in [*module.down_blocks, module.mid_block, *module.up_blocks]:
            if block is not None:
                block.forward = torch.compile(block.forward, **kw)
    else:
        module.forward = torch.compile(module.forward, **kw)


# -- quantisation -----------------------------------------------------------------------------------------------
def quantize(module, kind: str) -> None:
    """int8 / fp8 weights of `module`'s linear layers through torchao (which must be installed)."""
    try:
        from torchao.quantization import quantize_
    except ImportError:
        from pintor.errors import PintorError

        raise PintorError("quantize needs torchao: pip install torchao") from None
    import torchao.quantization as q

    if kind == "int8":
        cfg = q.Int8WeightOnlyConfig()
    elif kind == "int8-dynamic":
        cfg = q.Int8DynamicActivationInt8WeightConfig()
    else:
        cfg = q.Float8WeightOnlyConfig()
    quantize_(module, cfg)


# -- DeepCache ------------------------------------------------------------------------------------------------
class DeepCache:
    """DeepCache-style feature reuse for a diffusers `UNet2DConditionModel` (Ma et al., 2023).

    The UNet's deep levels change slowly from step to step. Every `interval` calls the whole UNet runs and the
    output of the up-block just inside the outer `depth` levels is kept; the calls in between run only those
    outer levels (conv_in, the first `depth` down blocks, the last `depth` up blocks, conv_out) over the kept
    features. The state resets with `reset()` (the backend calls it before every decoder run), when the batch
    shape changes, or when the timestep goes up (a new run).
    """

    def __init__(self, unet, interval: int, depth: int = 1):
        n = len(unet.up_blocks)
        if not 1 <= depth < n:
            raise ValueError(f"deepcache depth must be from 1 to {n - 1} for this UNet, got {depth}")
        self.unet, self.interval, self.depth = unet, interval, depth
        self.full_forward = unet.forward
        self.cache = None
        self.calls = 0
        self.full_calls = 0
        self.reuse_calls = 0
        self._last_t = None
        self._capturing = False
        unet.up_blocks[n - depth - 1].register_forward_hook(self._capture)

    def _capture(self, module, args, output):
        if self._capturing:
            # A copy: under CUDA graphs the block's output buffer is reused by later replays.
            self.cache = output.clone()

    def reset(self) -> None:
        self.cache, self.calls, self._last_t = None, 0, None

    def _timestep_value(self, timestep):
        import torch

        if isinstance(timestep, int | float):
            return float(timestep)
        if isinstance(timestep, torch.Tensor) and timestep.device.type == "cpu" and timestep.numel() >= 1:
            return float(timestep.reshape(-1)[0])
        return None  # on an accelerator, reading it would synchronise: rely on reset()

    def __call__(self, sample, timestep, encoder_hidden_states=None, class_labels=None, timestep_cond=None,
                 attention_mask=None, cross_attention_kwargs=None, added_cond_kwargs=None,
                 down_block_additional_residuals=None, mid_block_additional_residual=None,
                 down_intrablock_additional_residuals=None, encoder_attention_mask=None, return_dict=True):
        t = self._timestep_value(timestep)
        if t is not None and self._last_t is not None and t >= self._last_t:
            self.reset()
        self._last_t = t
        plain = (down_block_additional_residuals is None and mid_block_additional_residual is None
                 and down_intrablock_additional_residuals is None and class_labels is None)
        reuse = (plain and self.cache is not None and self.calls % self.interval != 0
                 and self.cache.shape[0] == sample.shape[0])
        self.calls += 1
        kwargs = dict(encoder_hidden_states=encoder_hidden_states, timestep_cond=timestep_cond,
                      attention_mask=attention_mask, cross_attention_kwargs=cross_attention_kwargs,
                      added_cond_kwargs=added_cond_kwargs, encoder_attention_mask=encoder_attention_mask)
        if not reuse:
            self.full_calls += 1
            self._capturing = True
            try:
                return self.full_forward(sample, timestep, class_labels=class_labels,
                                         down_block_additional_residuals=down_block_additional_residuals,
                                         mid_block_additional_residual=mid_block_additional_residual,
                                         down_intrablock_additional_residuals=down_intrablock_additional_residuals,
                                         return_dict=return_dict, **kwargs)
            finally:
                self._capturing = False
        self.reuse_calls += 1
        out = self._outer(sample, timestep, **kwargs)
        if not return_dict:
            return (out,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=out)

    def _outer(self, sample, timestep, encoder_hidden_states, timestep_cond, attention_mask, cross_attention_kwargs,
               added_cond_kwargs, encoder_attention_mask):
        """The outer levels of `UNet2DConditionModel.forward` over the cached deep features."""
        import torch

        u, depth = self.unet, self.depth
        forward_upsample_size = any(s % 2**u.num_upsamplers for s in sample.shape[-2:])
        if attention_mask is not None:
            attention_mask = ((1 - attention_mask.to(sample.dtype)) * -10000.0).unsqueeze(1)
        if encoder_attention_mask is not None:
            encoder_attention_mask = ((1 - encoder_attention_mask.to(sample.dtype)) * -10000.0).unsqueeze(1)
        if u.config.center_input_sample:
            sample = 2 * sample - 1.0
        emb = u.time_embedding(u.get_time_embed(sample=sample, timestep=timestep), timestep_cond)
        aug_emb = u.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states,
                                  added_cond_kwargs=added_cond_kwargs)
        if u.config.addition_embed_type == "image_hint":
            aug_emb, hint = aug_emb
            sample = torch.cat([sample, hint], dim=1)
        emb = emb + aug_emb if aug_emb is not None else emb
        if u.time_embed_act is not None:
            emb = u.time_embed_act(emb)
        blocks = list(u.down_blocks[:depth]) + list(u.up_blocks[-depth:])
        attn_kwargs = {}
        if any(getattr(b, "has_cross_attention", False) for b in blocks):
            encoder_hidden_states = u.process_encoder_hidden_states(
                encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs)
            attn_kwargs = dict(encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask,
                               cross_attention_kwargs=cross_attention_kwargs,
                               encoder_attention_mask=encoder_attention_mask)

        sample = u.conv_in(sample)
        res = (sample,)
        for i, block in enumerate(u.down_blocks[:depth]):
            innermost = i == depth - 1
            if getattr(block, "has_cross_attention", False):
                sample, r = block(hidden_states=sample, temb=emb, **attn_kwargs)
                if innermost and block.downsamplers is not None:
                    r = r[:-1]  # the downsampled output feeds only the cached levels
            elif innermost:
                r = ()
                for resnet in block.resnets:  # skip the downsampler: nothing outer reads it
                    sample = resnet(sample, emb)
                    r += (sample,)
            else:
                sample, r = block(hidden_states=sample, temb=emb)
            res += r

        sample = self.cache
        up = list(u.up_blocks[-depth:])
        for j, block in enumerate(up):
            final = j == len(up) - 1
            r, res = res[-len(block.resnets):], res[:-len(block.resnets)]
            upsample_size = res[-1].shape[2:] if (not final and forward_upsample_size) else None
            if getattr(block, "has_cross_attention", False):
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=r, upsample_size=upsample_size,
                               **attn_kwargs)
            else:
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=r, upsample_size=upsample_size)
        if u.conv_norm_out:
            sample = u.conv_act(u.conv_norm_out(sample))
        return u.conv_out(sample)


def enable_deepcache(unet, interval: int, depth: int = 1) -> DeepCache:
    """Routes `unet.forward` through a `DeepCache`; returns it (also at `unet.pintor_deepcache`)."""
    state = getattr(unet, "pintor_deepcache", None)
    if state is None:
        state = DeepCache(unet, interval, depth)
        unet.forward = state
        object.__setattr__(unet, "pintor_deepcache", state)
    return state


def reset_step_state(unet) -> None:
    """Forgets step-to-step state (DeepCache features) before a new denoising run."""
    state = getattr(unet, "pintor_deepcache", None)
    if state is not None:
        state.reset()


# -- MoVQ slicing and tiling ----------------------------------------------------------------------------------
def _wrap_movq_decode(movq, slicing: bool, tile: int) -> None:
    """Decodes a batch one image at a time (`slicing`, exact) and latents wider than `tile` pixels in tiles that
    overlap by a quarter, blended linearly (`tile`, approximate: the decoder's attention sees one tile)."""
    import torch

    original = movq.decode
    factor = 2 ** (len(movq.config.block_out_channels) - 1)
    tile_lat = tile // factor if tile else 0

    def decode_one(z, **kw):
        if tile_lat and max(z.shape[-2:]) > tile_lat:
            return _tiled(z, **kw)
        return original(z, **kw)["sample"]

    def _tiled(z, **kw):
        overlap = tile_lat // 4
        stride = tile_lat - overlap
        h, w = z.shape[-2:]
        out = None
        weight = None
        ys = list(range(0, max(h - overlap, 1), stride))
        xs = list(range(0, max(w - overlap, 1), stride))
        for y in ys:
            for x in xs:
                y0, x0 = min(y, max(h - tile_lat, 0)), min(x, max(w - tile_lat, 0))
                part = original(z[..., y0:y0 + tile_lat, x0:x0 + tile_lat], **kw)["sample"]
                if out is None:
                    out = torch.zeros(*part.shape[:2], h * factor, w * factor, device=part.device, dtype=part.dtype)
                    weight = torch.zeros(1, 1, h * factor, w * factor, device=part.device, dtype=part.dtype)
                ph, pw = part.shape[-2:]
                ramp = _blend_mask(ph, pw, overlap * factor, y0 > 0, x0 > 0, y0 + tile_lat < h, x0 + tile_lat < w,
                                   part.device, part.dtype)
                out[..., y0 * factor:y0 * factor + ph, x0 * factor:x0 * factor + pw] += part * ramp
                weight[..., y0 * factor:y0 * factor + ph, x0 * factor:x0 * factor + pw] += ramp
        return out / weight

    def decode(z, force_not_quantize=False, return_dict=True, **kw):
        kw["force_not_quantize"] = force_not_quantize
        if slicing and z.shape[0] > 1:
            sample = torch.cat([decode_one(z[i:i + 1], **kw) for i in range(z.shape[0])])
        else:
            sample = decode_one(z, **kw)
        if not return_dict:
            return (sample,)
        from diffusers.models.autoencoders.vae import DecoderOutput

        return DecoderOutput(sample=sample)

    movq.decode = decode


def _blend_mask(h, w, ramp, top, left, bottom, right, device, dtype):
    import torch

    def axis(n, lo, hi):
        m = torch.ones(n, device=device, dtype=dtype)
        r = torch.linspace(0, 1, ramp + 2, device=device, dtype=dtype)[1:-1] if ramp else None
        if ramp and lo:
            m[:ramp] = r
        if ramp and hi:
            m[-ramp:] = r.flip(0)
        return m

    return axis(h, top, bottom)[:, None] * axis(w, left, right)[None, :]


# -- placing pipelines ----------------------------------------------------------------------------------------
def place(pipe, device: str, low_vram: bool, lowest_vram: bool, opts: Optimizations) -> None:
    """Moves a pipeline to `device`, or offloads it (model offload for low VRAM, sequential for lowest) on
    accelerators; on CPU the memory modes have nothing to offload to and leave the pipeline as it is."""
    if device != "cpu" and not (low_vram or lowest_vram):
        pipe.to(device)
    elif device != "cpu":
        if lowest_vram:
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.enable_model_cpu_offload(device=device)
    if opts.attention_slicing and hasattr(pipe, "enable_attention_slicing"):
        pipe.enable_attention_slicing()


# -- the embedding cache --------------------------------------------------------------------------------------
class EmbeddingCache:
    """A small LRU of prior outputs and CLIP image embeddings.

    A prior run's key includes the state of every random generator it draws from; a hit returns the stored
    tensors and moves the generators to the state the run left them in, so everything after it (the decoder's
    noise) is exactly what it would have been.
    """

    def __init__(self, size: int = 64):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key):
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        return None

    def put(self, key, value) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def generator_digest(gens) -> str:
    """A digest of the states of a list of torch generators."""
    h = hashlib.sha1()
    for g in gens or ():
        h.update(g.get_state().numpy().tobytes())
    return h.hexdigest()


def pixel_digest(image) -> str:
    """A digest of an image's pixels (PIL image or tensor) and size."""
    import numpy as np

    if hasattr(image, "tobytes") and hasattr(image, "size") and hasattr(image, "mode"):
        data, shape = image.tobytes(), (image.mode, image.size)
    else:
        arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
        data, shape = arr.tobytes(), (str(arr.dtype), arr.shape)
    return hashlib.sha1(repr(shape).encode() + data).hexdigest()


def scheduler_digest(scheduler) -> str:
    return hashlib.sha1((type(scheduler).__name__ + repr(sorted(dict(scheduler.config).items()))).encode()).hexdigest()


# -- a DDIM sampler for the prior -----------------------------------------------------------------------------
def prior_ddim_scheduler(unclip_config):
    """A DDIM sampler with the prior's noise schedule; accepts the UnCLIP `prev_timestep` the prior pipeline passes."""
    from diffusers import DDIMScheduler

    class PriorDDIMScheduler(DDIMScheduler):
        def step(self, model_output, timestep, sample, generator=None, prev_timestep=None, return_dict=True, **kw):
            return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)

    cfg = dict(unclip_config)
    cfg.pop("variance_type", None)
    return PriorDDIMScheduler.from_config(cfg, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
