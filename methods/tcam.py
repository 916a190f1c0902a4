import random as _random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.cams import frame_cams, shot_pooled_cams
from bench.dataset import ShotFrames, make_loader
from bench.method import VideoSeededConfig, VideoSeededDecoder, register_method


@dataclass(frozen=True)
class TCAMConfig(VideoSeededConfig):
    """TCAM (Belharbi et al., WACV 2023). Defaults: the tcam-wsol-video README command (YTOv1,
    ResNet50): CAM seeds from CAM-TMP over the frame and 1 frame before, 1 fg among the top
    int(0.6 |ROI|) of the Otsu ROI (all blobs) weighted by value + 1 bg among int(0.1 HW)
    lowest, 3x3 dilation; CRF 2e-9 at scale 1; size 0.01 (`VideoSeededConfig`)."""

    n_frames: int = 1  # CAM-TMP window: previous frames of the same shot pooled with the frame
    direction: str = "before"
    reweight_h: float | None = None  # optional exp(h*cam)/max re-weighting before the max (`sl_tc_knn_t` 0: off)


class _FlippedDraws(torch.utils.data.Dataset):
    """The train split's random frames, read without the split's own augmentation, flipped here
    with the flip reported as `flip` so that a frame's stored map can be flipped with it."""

    def __init__(self, draws: ShotFrames):
        self.draws = draws

    def __len__(self):
        return len(self.draws)

    def __getitem__(self, index):
        item = self.draws[index]
        flip = int(_random.random() < 0.5)  # seeded per cell by the runner, like the split's own flip
        if flip:
            item["image"] = item["image"].flip(-1)
        item["flip"] = flip
        return item


@register_method
class TCAM(VideoSeededDecoder):
    """TCAM: seeds from CAM-TMP, the element-wise max over time of the stored stage-1 seed CAMs
    (`seed_cam`, min-max normalised per frame) of the frame and its `n_frames` previous frames
    *of the same shot* (`bench.cams.temporal`), then Otsu ROI, top-60% value-weighted
    foreground and lowest-CAM background draws; the rest is F-CAM's.

    The per-frame CAMs are computed once per fit, at the classifier's CAM resolution, on the
    frames without augmentation; training reads the same frames and redoes only the random
    flip, applied to the frame and its pooled map together (the paper budget's random crop is
    not applied: a stored map would have to be cropped with it)."""

    name = "tcam"
    Config = TCAMConfig
    batch_keys = ("index", "flip")

    def train_loader(self, train_set, ctx):
        frames = self.shot_frames(train_set)
        view = frames.without_augmentation()
        seeder, loc = self.seeder, self.dataset.localization_classes

        def cam_fn(images, labels):
            return seeder.localize(images, loc(labels)).cams

        cams = frame_cams(cam_fn, view, ctx.budget.batch_size, ctx.device)
        # pooled once for every frame; kept at CAM resolution (small) and resized per batch
        self.pooled = shot_pooled_cams(cams, view.shot_ids, self.cfg.n_frames, self.cfg.direction,
                                       self.cfg.reweight_h)
        draws = _FlippedDraws(ShotFrames(view, train_set.draws_per_shot))
        return make_loader(draws, ctx.budget.batch_size, shuffle=True, seed=ctx.seed,
                           num_workers=ctx.budget.num_workers, drop_last=True, device=ctx.device)

    def cam_maps(self, net, features, images, labels, index=None, flip=None, **batch):
        if index is None:
            raise ValueError("tcam: cam_maps needs the frames' `index` (the pooled maps are stored per frame)")
        maps = self.pooled[index.to(self.pooled.device)].to(images.device, torch.float32)
        maps = F.interpolate(maps[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        if flip is not None:
            maps = torch.where(flip.bool()[:, None, None], maps.flip(-1), maps)
        return maps
