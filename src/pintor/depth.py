"""Depth estimation for the depth ControlNet: a transformers depth model turns a photo into a depth map."""

from __future__ import annotations

from pintor.backends.common import from_pretrained

DEFAULT_DEPTH_ESTIMATOR = "Intel/dpt-hybrid-midas"


class DepthEstimator:
    """Loads a transformers depth-estimation model (DPT, Depth Anything...) and maps photos to depth maps.

    Args:
        source (`str`): hub id or local folder, in transformers format with safetensors weights.
        device (`str`): where to run it.
    """

    def __init__(self, source: str, device: str = "cpu"):
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.model = from_pretrained(AutoModelForDepthEstimation, source, "depth estimator", source).to(device).eval()
        self.processor = from_pretrained(AutoImageProcessor, source, "depth processor", source, use_safetensors=None)
        self.device = device

    def __call__(self, image):
        """Returns an L-mode PIL image the size of `image`: white is near, black is far."""
        import numpy as np
        import torch
        from PIL import Image

        inputs = self.processor(images=image, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            depth = self.model(**inputs).predicted_depth  # (1, h, w); larger = nearer for DPT/MiDaS
        depth = torch.nn.functional.interpolate(depth[:, None].float(), size=image.size[::-1], mode="bicubic",
                                                align_corners=False)[0, 0]
        lo, hi = depth.min(), depth.max()
        norm = (depth - lo) / (hi - lo) if hi > lo else torch.zeros_like(depth)
        return Image.fromarray((norm.cpu().numpy() * 255).round().astype(np.uint8), mode="L")
