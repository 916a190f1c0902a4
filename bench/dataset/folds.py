"""Datasets published as cross-validation folds (the histology sets GlaS and Camelyon16).

Each fold has its own metadata folder `<root>/metadata/<meta_name>/fold<k>/<split>/` with the
splits train (labels only), valcl (labels only: classification model selection), valpx (a
few pixel-labelled images: the validation split of the protocol) and test; the images are
shared by all folds under `<root>/<image_dir>/`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.dataset.metadata import MetadataDataset

NUM_FOLDS = 5


NEGATIVE_MAPS = ("label", "roi")


@dataclass(frozen=True)
class FoldConfig:
    fold: int = 0  # which of the 5 folds to read (`--set glas.fold=2`)
    # The class map a negative (normal) image is scored on by CAM methods (decoder maps are
    # class-agnostic). "label": its own label's map, as the seed authors' evaluator does
    # (sbelharbi/negev dlib/learning/inference_wsol.py `get_cam_one_sample`, class_idx =
    # target) for their published numbers; "roi": the tumour map, judging a normal image by
    # how little tumour its map shows. Only datasets with a negative class (Camelyon16) differ.
    negative_map: str = "label"


class FoldedMetadataDataset(MetadataDataset):
    annotation = "mask"
    primary_metric = "PxAP"
    metrics = ("Dice-fg", "Dice-bg", "mIoU")
    split_names = {"train": "train", "val": "valpx", "test": "test"}
    Config = FoldConfig

    def __init__(self, cfg=None):
        super().__init__(cfg)
        if not 0 <= self.cfg.fold < NUM_FOLDS:
            raise ValueError(f"{self.name}: fold {self.cfg.fold} does not exist (folds 0..{NUM_FOLDS - 1})")
        if self.cfg.negative_map not in NEGATIVE_MAPS:
            raise ValueError(f"{self.name}: negative_map {self.cfg.negative_map!r} is not one of {NEGATIVE_MAPS}")

    @property
    def negative_map(self) -> str:
        return self.cfg.negative_map

    def meta_dir(self, data_root: Path, split: str) -> Path:
        folder = self.split_names.get(split, split)
        return Path(data_root) / "metadata" / (self.meta_name or self.name) / f"fold{self.cfg.fold}" / folder

    def missing(self, data_root: Path) -> str | None:
        where = self.meta_dir(data_root, "test")
        if not (where / "image_ids.txt").is_file():
            return (f"{self.name}: fold {self.cfg.fold} not found (looked for {where}/image_ids.txt); point to "
                    f"it with --data-root DIR (DIR/metadata/{self.meta_name}/fold<k>/ and DIR/{self.image_dir}/)")
        return None

    def check_splits(self) -> dict[str, str]:
        return {"train": "none", "valcl": "none", "valpx": self.annotation, "test": self.annotation}
