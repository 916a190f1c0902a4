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


@dataclass(frozen=True)
class FoldConfig:
    fold: int = 0  # which of the 5 folds to read (`--set glas.fold=2`)


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
