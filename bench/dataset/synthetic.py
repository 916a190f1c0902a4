"""The base of the embedded synthetic datasets: generated on the spot into the metadata
format, then read through the same loader as the real datasets."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from bench.data import synthetic, synthetic_video
from bench.dataset.metadata import MetadataDataset


class Generated:
    """Mixin of the embedded datasets (images and video): classes and sizes come from the
    generator's config, and the data is never missing (it is generated on demand)."""

    synthetic = True
    generator_version: int = 0  # of the generator that draws this dataset (bench.data.synthetic*)

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

    def fingerprint(self, data_root: Path) -> str | None:
        """The generator is deterministic: its version and configuration are the data."""
        doc = {"name": self.name, "generator_version": self.generator_version, "config": dataclasses.asdict(self.cfg)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


class SyntheticDataset(Generated, MetadataDataset):
    generator_version = synthetic.GENERATOR_VERSION

    def prepare(self, data_root: Path) -> None:
        synthetic.prepare(self.name, Path(data_root), self.cfg)


class SyntheticVideoDataset(Generated):
    """Mixin of the embedded video datasets (with `VideoDataset`)."""

    generator_version = synthetic_video.GENERATOR_VERSION

    def prepare(self, data_root: Path) -> None:
        synthetic_video.prepare_video(Path(data_root), self.cfg)
