"""The stronger-supervision references: the same backbone with a foreground head trained on
pixel labels (masks, or boxes filled as masks): `fullsup` (the training split's labels) and
`fewshot` (a few labelled images per class of the validation split, Choe et al., CVPR 2020).
`supervision` says which, so tables keep them apart from the weakly supervised methods."""
from __future__ import annotations

import logging
import random as _random
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.data.metadata import ImageRecord, read_split
from bench.dataset import IGNORE, MetadataImages
from bench.method.trained import TrainedCAM
from bench.method.training import train

log = logging.getLogger(__name__)


class LocalizationTargets(torch.utils.data.Dataset):
    """Images with their pixel targets at the network input size: item "mask" uint8 [S,S]
    (1 object, 0 background, 255 ignored); boxes become filled rectangles. With `flip`, image and
    target are flipped together (the training split's random flip; the loader of the weak
    splits flips the image only, having no target)."""

    def __init__(self, root: Path, records: list[ImageRecord], annotation: str, input_size: int,
                 mask_threshold: int = 0, flip: bool = True, length: int | None = None):
        if annotation not in ("box", "mask"):
            raise ValueError(f"LocalizationTargets: annotation must be box or mask, got {annotation!r}")
        if not records:
            raise ValueError("LocalizationTargets: no images")
        self.images = MetadataImages(root, records, input_size=input_size, eval_size=input_size, train=False,
                                     with_boxes=annotation == "box", with_masks=annotation == "mask",
                                     mask_threshold=mask_threshold)
        self.size, self.flip = input_size, flip
        self.labels = self.images.labels
        self.length = length or len(records)  # > len(records): the images cycle (few-shot epochs)

    def __len__(self):
        return self.length

    def __getitem__(self, index: int) -> dict:
        item = self.images[index % len(self.images)]
        if "boxes" in item:
            target = torch.zeros(self.size, self.size, dtype=torch.uint8)
            for x0, y0, x1, y1 in item.pop("boxes").long().tolist():
                target[y0:y1 + 1, x0:x1 + 1] = 1  # inclusive coordinates
        else:
            target = item["mask"]
        if self.flip and _random.random() < 0.5:  # seeded per cell by the runner
            item["image"], target = item["image"].flip(-1), target.flip(-1)
        item["mask"] = target
        item["index"] = index % len(self.images)
        return item


def pixel_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of foreground logits [B,1,h,w] (bilinearly upsampled to the target)
    against target [B,S,S] (1/0, IGNORE pixels left out)."""
    logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    keep = target != IGNORE
    if not keep.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[keep], target[keep].to(logits.dtype))


class PixelSupervised(TrainedCAM):
    """The backbone + GAP-linear classifier + a 1x1 conv foreground head, trained by
    cross-entropy on the class labels plus pixel BCE on the targets of `supervised_records`.
    Localization: the foreground probability (class-agnostic); logits: the classifier's."""

    supervision = "full"
    pixel_weight = 1.0

    def supervised_records(self, train_set, val, ctx) -> tuple[list[ImageRecord], int | None]:
        """(the annotated records to train on, the epoch length in images or None for one pass)."""
        raise NotImplementedError

    def build_model(self, ctx):
        model = ctx.new_classifier()
        model.fg_head = nn.Conv2d(model.backbone.out_channels, 1, kernel_size=1).to(ctx.device)
        return model

    def training_loss(self, model, images, labels, mask):
        out = model(images)
        return {"ce": F.cross_entropy(out.logits, labels),
                "pixel": self.pixel_weight * pixel_loss(model.fg_head(out.features), mask)}

    def fit(self, train_set, val, ctx) -> None:
        records, length = self.supervised_records(train_set, val, ctx)
        ds = ctx.dataset
        data = LocalizationTargets(train_set.root, records, ds.annotation, train_set.input_size,
                                   getattr(ds, "mask_threshold", 0), flip=True, length=length)
        self.train_images = len(records)
        self.model = self.build_model(ctx).to(ctx.device)
        train(self.model, self.model.parameters(), data, ctx.budget, ctx.device, ctx.budget.stage1_schedule(),
              ctx.seed, loss_fn=self.training_loss, desc=f"{self.name} classifier", batch_keys=("mask",))
        self.model.eval()

    def cams(self, model, images, labels):
        out = model(images)
        return torch.sigmoid(model.fg_head(out.features))[:, 0], out.logits


def train_split_records(train_set, ctx) -> list[ImageRecord]:
    """The training images' records with their localization labels, read from the training
    split's localization file (the same file name as the test split's); an error naming the
    file when the dataset has none (the field's image benchmarks give train images class labels
    only)."""
    ds = ctx.dataset
    if not hasattr(ds, "meta_dir"):
        raise TypeError(f"{ds.name}: pixel supervision needs a metadata dataset (train localization files)")
    meta = ds.meta_dir(ctx.settings.data_root, "train")
    loc = meta / ds.loc_file
    if not loc.is_file():
        raise FileNotFoundError(f"{ds.name}: the training split has no localization labels ({loc} is missing)")
    by_path = {r.path: r for r in read_split(meta, ds.annotation, ds.loc_file)}
    return [by_path[r.path] for r in train_set.records]  # the budget's subset, in its order


def few_shot_records(records: list[ImageRecord], shots: int) -> list[ImageRecord]:
    """The first `shots` records of each class, in split order (all of a class that has fewer)."""
    if shots < 1:
        raise ValueError(f"few_shot_records: shots must be >= 1, got {shots}")
    taken: dict[int, int] = {}
    out = []
    for r in records:
        if taken.get(r.label, 0) < shots:
            taken[r.label] = taken.get(r.label, 0) + 1
            out.append(r)
    short = {c: n for c, n in taken.items() if n < shots}
    if short:
        log.warning("few-shot: fewer than %d labelled images for classes %s (%s)", shots, sorted(short),
                    ", ".join(f"{c}: {n}" for c, n in sorted(short.items())))
    return out
