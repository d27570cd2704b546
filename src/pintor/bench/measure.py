"""Timers, memory peaks, FLOPs and image comparison for `pintor bench`."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

# Dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets), by a substring of the device name.
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("RTX 4090", 165.0),
    ("RTX 2060", 52.0),
)


def bf16_peak_tflops(device_name: str) -> float | None:
    """The data-sheet dense bf16 peak of a GPU, or `None` when unknown (or a CPU)."""
    for key, peak in BF16_PEAK_TFLOPS:
        if key in device_name:
            return peak
    return None


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class StageTimer:
    """Times every call of the modules it is attached to, with a device synchronisation at both ends so that
    GPU work is charged to the module that launched it.

    The hooks sit in `nn.Module.__call__`, outside `forward`: compiled forwards and offload hooks run inside
    them, so their cost is counted.
    """

    def __init__(self, device: str):
        self.device = device
        self.events: list[tuple[str, float, float]] = []
        self._handles = []
        self._restore = []
        self._open: dict[int, float] = {}

    def attach(self, name: str, module) -> None:
        if module is None:
            return

        def pre(mod, args):
            synchronize(self.device)
            self._open[id(mod)] = time.perf_counter()

        def post(mod, args, out):
            synchronize(self.device)
            self.events.append((name, self._open.pop(id(mod)), time.perf_counter()))

        self._handles.append(module.register_forward_pre_hook(pre))
        self._handles.append(module.register_forward_hook(post))

    def wrap(self, name: str, obj, attr: str) -> None:
        """Times a method that is not a module call (MoVQ's `decode`)."""
        original = getattr(obj, attr)
        had_instance_attr = attr in vars(obj)

        def timed(*args, **kwargs):
            synchronize(self.device)
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            synchronize(self.device)
            self.events.append((name, t0, time.perf_counter()))
            return out

        object.__setattr__(obj, attr, timed)
        self._restore.append((obj, attr, original if had_instance_attr else None))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        for obj, attr, original in reversed(self._restore):
            if original is None:
                vars(obj).pop(attr, None)
            else:
                object.__setattr__(obj, attr, original)
        self._handles, self._restore = [], []

    def clear(self) -> None:
        self.events = []

    def summary(self) -> dict:
        """Per-stage seconds of the calls recorded since `clear()`."""
        by = {}
        for name, t0, t1 in self.events:
            by.setdefault(name, []).append((t0, t1))
        out: dict = {}
        text = by.get("text_encoder", [])
        out["text_encoding_s"] = sum(t1 - t0 for t0, t1 in text)
        img = by.get("image_encoder", [])
        out["image_encoder_s"] = sum(t1 - t0 for t0, t1 in img)
        prior = by.get("prior", [])
        if prior:
            out["prior_s"] = prior[-1][1] - prior[0][0]
            out["prior_calls"] = len(prior)
            out["prior_step_s"] = _median_step(prior)
        unet = by.get("unet", [])
        decode = by.get("movq_decode", [])
        if unet:
            end = decode[0][0] if decode and decode[0][0] > unet[-1][0] else unet[-1][1]
            starts = [t0 for t0, _ in unet] + [end]
            steps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
            out["decoder_s"] = end - unet[0][0]
            out["decoder_steps_s"] = [round(s, 6) for s in steps]
            out["decoder_step_s"] = statistics.median(steps)
            out["unet_calls"] = len(unet)
            out["unet_call_s"] = statistics.median(t1 - t0 for t0, t1 in unet)
            out["unet_total_s"] = sum(t1 - t0 for t0, t1 in unet)
        if decode:
            out["movq_decode_s"] = sum(t1 - t0 for t0, t1 in decode)
        return out


def _median_step(calls) -> float:
    if len(calls) == 1:
        return calls[0][1] - calls[0][0]
    starts = [t0 for t0, _ in calls]
    return statistics.median(b - a for a, b in zip(starts, starts[1:], strict=False))


class PeakMemory:
    """Peak process RSS (Linux `VmHWM`, reset through `/proc/self/clear_refs`) and CUDA allocator peaks."""

    def __init__(self, device: str):
        self.device = device
        self.rss_resettable = True
        self.rss_start_mb = None

    def reset(self) -> None:
        # The heap a previous phase freed may stay mapped; its growth over this start is the phase's own.
        self.rss_start_mb = _proc_status_mb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.rss_resettable = False  # the peak then covers the whole process
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()

    def read(self) -> dict:
        out = {"rss_peak_mb": _rss_peak_mb(), "rss_peak_since_reset": self.rss_resettable}
        if self.rss_start_mb is not None:
            out["rss_start_mb"] = self.rss_start_mb
            out["rss_growth_mb"] = out["rss_peak_mb"] - self.rss_start_mb
        if self.device.startswith("cuda"):
            import torch

            out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
            out["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        return out


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_peak_mb() -> float:
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def psnr(a, b) -> float:
    """PSNR in dB of two 8-bit images (PIL or arrays); `inf` when identical."""
    import numpy as np

    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in size: {x.shape} and {y.shape}")
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def compare_images(ours: list, theirs: list, bound_db: float = 30.0) -> dict:
    """PSNR of each pair of images, with the worst and whether every pair is within `bound_db`."""
    import numpy as np

    values = [psnr(a, b) for a, b in zip(ours, theirs, strict=True)]
    worst = min(values) if values else float("nan")
    diff = max((int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())
                for a, b in zip(ours, theirs, strict=True)), default=0)
    return {"psnr_db": [_finite(v) for v in values], "psnr_db_min": _finite(worst), "identical": diff == 0,
            "max_abs_diff": diff, "bound_db": bound_db, "within_bound": bool(worst >= bound_db)}


def _finite(v: float):
    # JSON has no infinity: identical images are `null` with `identical: true`.
    return None if v == float("inf") else round(v, 3)


def unet_flops(unet_config: dict, batch: int, height: int, width: int, latent_scale: int = 8) -> int:
    """FLOPs of one UNet call (multiply-add = 2) at these shapes, counted on the meta device (no compute).

    Attention runs through diffusers' classic processors there, whose matmuls the counter sees; the fused
    SDPA kernels do the same arithmetic.
    """
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    cfg = {k: v for k, v in dict(unet_config).items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg)
        if unet.attn_processors:
            unet.set_default_attn_processor()
        h, w = height // latent_scale, width // latent_scale
        sample = torch.zeros(batch, unet.config.in_channels, h, w)
        t = torch.tensor(500)
        kind = unet.config.addition_embed_type
        hid = unet.config.encoder_hid_dim
        added, ehs = {}, None
        if kind == "image":
            added["image_embeds"] = torch.zeros(batch, hid)
        elif kind == "image_hint":
            added["image_embeds"] = torch.zeros(batch, hid)
            added["hint"] = torch.zeros(batch, 3, height, width)
        elif kind == "text_image":
            cross = unet.config.cross_attention_dim
            added["text_embeds"] = torch.zeros(batch, cross)
            added["image_embeds"] = torch.zeros(batch, cross)
            ehs = torch.zeros(batch, 77, hid)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        unet(sample, t, encoder_hidden_states=ehs, added_cond_kwargs=added, return_dict=False)
    return int(counter.get_total_flops())


def median(values) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None
