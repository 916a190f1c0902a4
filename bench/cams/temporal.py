"""Per-frame CAMs of a video split and CAM-TMP over them (TCAM; docs/protocol.md, "CAM-TMP").

`frame_cams` runs a frozen CAM method over every frame of a `VideoFrames` split (no
augmentation, batched: frames are independent) and returns min-max normalised maps [N, h, w]
in the split's frame order (no ReLU here: whether the CAM has one is the CAM method's business;
the authors' CAM seeds have none, LayerCAM has one). `shot_pooled_cams` applies the `temporal_max_pool` op to those
stored maps as ONE sequence [1, N, h, w] whose shot ids are the frames' shots: every frame is
pooled with the n neighbouring frames of its own shot only (the op clips its window at the
first frame whose shot id differs), so nothing is ever pooled across shots.
"""
from __future__ import annotations

import torch

from bench.ops.temporal_max_pool import temporal_max_pool
from bench.cams.normalize import minmax
from bench.dataset.base import make_loader

__all__ = ["frame_cams", "shot_pooled_cams"]


@torch.no_grad()
def frame_cams(cam_fn, frames, batch_size: int, device: torch.device, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Normalised maps [N, h, w] (float32, on `device`) of every frame of `frames` (a
    `VideoFrames`, read without augmentation): `cam_fn(images, labels) -> [B, h', w']`,
    resized (bilinear) to `size` when given."""
    view = frames.without_augmentation() if hasattr(frames, "without_augmentation") else frames
    out = []
    for batch in make_loader(view, batch_size, shuffle=False):
        images, labels = batch["image"].to(device), batch["label"].to(device)
        maps = cam_fn(images, labels).float()
        if size is not None and tuple(maps.shape[-2:]) != tuple(size):
            maps = torch.nn.functional.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        out.append(minmax(maps))
    return torch.cat(out)


def shot_pooled_cams(cams: torch.Tensor, shot_ids: torch.Tensor, n: int = 1, direction: str = "before",
                     reweight_h: float | None = None, normalize: bool = False) -> torch.Tensor:
    """CAM-TMP of stored per-frame maps: cams [N, h, w] of consecutive frames (shot by shot, in
    temporal order), shot_ids [N] -> pooled [N, h, w], each frame pooled with the `n` frames
    before/after/around it *in its own shot* (docs/protocol.md, "CAM-TMP"; TCAM's best: n = 1,
    before). The max of normalised maps stays in [0, 1]; tcam-wsol-video's loader does not
    min-max it again (`normalize=True` does)."""
    if cams.dim() != 3 or shot_ids.shape != cams.shape[:1]:
        raise ValueError(f"shot_pooled_cams: cams [N, h, w] and shot_ids [N] expected, got "
                         f"{tuple(cams.shape)} and {tuple(shot_ids.shape)}")
    pooled, _ = temporal_max_pool(cams[None].contiguous(), shot_ids[None].to(cams.device, torch.int64), n=n,
                                  direction=direction, reweight_h=reweight_h, normalize=normalize)
    return pooled[0]
