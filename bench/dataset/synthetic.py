"""The base of the embedded synthetic datasets: generated on the spot into the metadata
format, then read through the same loader as the real datasets."""
from __future__ import annotations

from pathlib import Path

from bench.data.synthetic import prepare
from bench.dataset.metadata import MetadataDataset


class Generated:
    """Mixin of the embedded datasets (images and video): classes and sizes come from the
    generator's config, and the data is never missing (it is generated on demand)."""

    synthetic = True

    @property
    def num_classes(self) -> int:
        return len(self.cfg.class_names())

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def eval_size(self) -> int:
        return self.cfg.image_size

    def missing(self, data_root: Path) -> str | None:
        return None  # generated on demand


class SyntheticDataset(Generated, MetadataDataset):
    def prepare(self, data_root: Path) -> None:
        prepare(self.name, Path(data_root), self.cfg)
