"""Small metadata-format trees written by the tests themselves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.metadata import ImageRecord, write_split
from bench.dataset import MetadataDataset


class TinyBoxes(MetadataDataset):
    """A 2-class box dataset in the metadata layout (not registered)."""

    name = "tiny-boxes"
    annotation = "box"
    num_classes = 2
    image_size = 32
    eval_size = 32


def write_box_tree(root: Path, per_split: int = 4, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        records = []
        for i in range(per_split):
            label = i % 2
            rel = f"{split}/c{label}/{i:03d}.png"
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            (root / "tiny-boxes" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / "tiny-boxes" / rel)
            records.append(ImageRecord(rel, label, (size, size), boxes=[(4, 5, 20, 25)]))
        write_split(root / "metadata" / "tiny-boxes" / split, records, "box")
    return root
