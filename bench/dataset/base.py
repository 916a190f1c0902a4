"""The dataset API: what a dataset plugin is, the splits it returns and how their items batch.

A plugin subclasses `Dataset` (or `MetadataDataset` for the field's metadata format) in one
small file of `datasets/` and registers itself with `@register_dataset`."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.config import EmptyConfig, PaperSchedule
from bench.dataset.protocol import EVAL_SIZE



@dataclass
class Splits:
    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    num_classes: int


class Dataset:
    name: str = ""
    task: str = "image"  # "image" or "video"; methods declare the tasks they support
    annotation: str = "box"  # "box" or "mask": the test-time ground truth
    primary_metric: str = "MaxBoxAccV2"
    metrics: tuple[str, ...] = ()  # extra metrics shown in the leaderboard table
    negative_class: int | None = None  # class id of fully negative images, if any
    num_classes: int = 0
    eval_size: int = EVAL_SIZE  # score maps and ground truth are compared at eval_size x eval_size
    synthetic: bool = False  # generated on the spot (never "missing")
    in_grid: bool = True  # False: `run --all` leaves it out of the grid (a transfer track's target)
    # The reference papers' training runs on this dataset, taken by the `paper` budget
    # (`bench.config.resolve_budget`): the stage-1 CAM classifier's and a method's own training's
    # (decoders). None: not published, the budget's generic settings.
    paper_stage1: PaperSchedule | None = None
    paper_method: PaperSchedule | None = None
    Config = EmptyConfig

    def __init__(self, cfg=None):
        self.cfg = cfg if cfg is not None else self.Config()

    def locate(self, data_root: Path) -> Path:
        """The folder this dataset is read from."""
        return Path(data_root) / self.name

    def missing(self, data_root: Path) -> str | None:
        """None when the dataset is on disk, else one line saying where it was looked for."""
        return None

    def prepare(self, data_root: Path) -> None:
        """Make the data available (the synthetic suite generates itself here)."""

    def splits(self, data_root: Path, budget) -> Splits:
        raise NotImplementedError

    def metadata_files(self, data_root: Path) -> list[Path]:
        """The files that say what the splits hold (their fingerprint keys results and caches):
        those of the train/val/test split folders of a dataset with `meta_dir`, else none."""
        meta_dir = getattr(self, "meta_dir", None)
        if meta_dir is None:
            return []
        folders = {meta_dir(data_root, split) for split in ("train", "val", "test")}
        return sorted(p for folder in folders if folder.is_dir() for p in folder.iterdir() if p.is_file())

    def fingerprint(self, data_root: Path) -> str | None:
        """A cheap fingerprint of the data a run reads: the content hashes of the metadata files
        (image ids, labels, sizes, annotations; not the image bytes). A cell's configuration hash
        and the stage-1 cache key include it, so other data on disk never resumes an entry or
        reuses a classifier trained on the old. None: nothing to fingerprint."""
        files = self.metadata_files(data_root)
        if not files:
            return None
        root = Path(data_root)
        listing = {str(p.relative_to(root) if p.is_relative_to(root) else p): _content_sha256(p) for p in files}
        return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def negative_map(self) -> str:
        """Which class map a negative image is scored on: "roi" (the positive class's) or
        "label" (its own). Datasets whose reference evaluator differs override this."""
        return "roi"

    def localization_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """The class whose map is evaluated for each image (GT-known: its own label). A
        dataset with a negative class (images without ROI, e.g. `normal` tissue) and one
        positive class localizes the positive (ROI) class everywhere when `negative_map` is
        "roi": a negative image is then judged by how little ROI its map shows, not by a map
        of "normal" tissue. With "label" every image is scored on its own label's map."""
        if self.negative_class is None or self.num_classes != 2 or self.negative_map == "label":
            return labels
        return torch.full_like(labels, 1 - self.negative_class)



def collate(items: list[dict]) -> dict:
    out = {"image": torch.stack([it["image"] for it in items]),
           "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
           "index": torch.tensor([it["index"] for it in items], dtype=torch.long)}
    if "boxes" in items[0]:
        out["boxes"] = [it["boxes"] for it in items]
    if "mask" in items[0]:
        out["mask"] = torch.stack([it["mask"] for it in items])
    for key, value in items[0].items():  # integer tags (video: shot, position, subset)
        if key not in out and isinstance(value, int):
            out[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
    return out


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0, drop_last=False,
                device: torch.device | None = None):
    generator = torch.Generator().manual_seed(seed)
    # pinned batches let the host-to-device copy overlap the previous step (non_blocking below)
    pin = device is not None and device.type == "cuda"
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate,
        num_workers=num_workers, drop_last=drop_last and len(dataset) > batch_size,
        persistent_workers=num_workers > 0, pin_memory=pin,
        prefetch_factor=4 if num_workers > 0 else None)


_content_hashes: dict[tuple, str] = {}


def _content_sha256(path: Path) -> str:
    """sha256 of a file's bytes ("missing" if absent), memoised on (path, size, mtime)."""
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _content_hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _content_hashes[key] = digest.hexdigest()
    return _content_hashes[key]

