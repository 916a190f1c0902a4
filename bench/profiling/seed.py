"""Profile "seed": the batched seeder against a per-image Python loop of the same steps."""
from __future__ import annotations

import torch

from bench.ops.seed import SeedConfig, make_seeds
from bench.profiling import ProfileTable, register_profile, time_fn

SIZES = {"full": (32, 224, 224), "small": (4, 32, 32)}


def make_seeds_per_image(cams, cfg, generator=None):
    """The same steps, one image at a time (the baseline)."""
    return torch.cat([make_seeds(cams[i : i + 1], cfg, generator) for i in range(cams.shape[0])])


@register_profile("seed")
def profile_seed(device: torch.device, size: str) -> list[ProfileTable]:
    B, H, W = SIZES[size]
    g = torch.Generator(device=device).manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, device=device), torch.linspace(-1, 1, W, device=device), indexing="ij")
    blob = torch.exp(-((yy[None] - 0.3 * torch.rand(B, 1, 1, device=device, generator=g)) ** 2 + xx[None] ** 2) * 4)
    cams = (blob + 0.1 * torch.rand(B, H, W, device=device, generator=g)).clamp(0, 1)
    rows = []
    for mode, erode in (("uniform", 3), ("top", 0), ("proportional", 0)):
        cfg = SeedConfig(n_fg=2, n_bg=2, fg_mode=mode, erode_size=erode)
        t_b = time_fn(lambda: make_seeds(cams, cfg, g), device)
        t_l = time_fn(lambda: make_seeds_per_image(cams, cfg, g), device)
        rows.append({"fg_mode": mode, "erode": erode, "batched ms": round(t_b, 3),
                     "per-image loop ms": round(t_l, 3), "speedup": round(t_l / t_b, 2)})
    notes = [f"{B} maps of {H}x{W} float32 on {device}; 2 fg + 2 bg seeds, 3x3 dilation."]
    return [ProfileTable(title=f"seeder ({size})", rows=rows, notes=notes)]
