"""Images and configs shared by the augmentation tests."""

from __future__ import annotations

import torch

EVERYTHING_ON = {
    "random_resized_crop": {"scale": [0.3, 1.0]},
    "scaled_paste": {"p": 0.5},
    "rotate4": {"p": 0.5},
    "hflip": {"p": 0.5},
    "color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
    "grid_shuffle": {"grid": 3, "p": 0.5},
    "random_quality": {"downscale_p": 0.5, "jpeg_p": 0.5},
    "cutmix": {"alpha": 1.0, "p": 0.5},
    "mixup": {"alpha": 0.2, "p": 0.5},
}


def random_image(height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)


def smooth_image(height: int = 48, width: int = 48) -> torch.Tensor:
    """Gradients with structure, so resizing and JPEG behave as on a photo."""
    y = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
    x = torch.linspace(0, 1, width).view(1, width).expand(height, width)
    rgb = torch.stack([x, y, (x * y).sqrt()]) * 255
    return rgb.round().to(torch.uint8)
