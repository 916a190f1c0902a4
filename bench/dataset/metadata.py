"""Datasets in the field's metadata format (docs/protocol.md, "On-disk format"): images under
`<root>/<image_dir>` and one folder of text files per split; items resized for the network and
their boxes and masks brought to the evaluation frame."""
from __future__ import annotations

import random as _random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from bench.data.metadata import ImageRecord, MetadataError, read_split
from bench.dataset.base import Dataset, Splits
from bench.dataset.protocol import IGNORE

PIXEL_CACHE_BYTES = 1 << 30  # splits whose decoded pixels fit are decoded once per process


class MetadataDataset(Dataset):
    """A dataset in the metadata format: images under `<root>/<image_dir>` and split folders
    `<root>/metadata/<meta_name>/<split>/`."""

    image_dir: str = ""  # default: the dataset name
    meta_name: str = ""  # default: the dataset name
    split_names: dict[str, str] = {"train": "train", "val": "val", "test": "test"}
    image_size: int = 224  # network input size (square) unless the budget sets one
    loc_file: str = "localization.txt"  # file with the test-time annotation
    extra_mask_file: str | None = None  # optional mask file for box datasets (adds PxAP)
    mask_threshold: int = 127  # mask pixels (as 8-bit grey) above this are foreground; 0 for label maps
    published_counts: dict[str, int | tuple[int, int]] = {}  # split folder -> published image count
    # (or an inclusive range); `bench data check` warns on a mismatch

    def check_splits(self) -> dict[str, str]:
        """Split folders `bench data check` validates: folder name -> annotation read there."""
        return {self.split_names[s]: ("none" if s == "train" else self.annotation) for s in ("train", "val", "test")}

    def image_root(self, data_root: Path) -> Path:
        return Path(data_root) / (self.image_dir or self.name)

    def meta_dir(self, data_root: Path, split: str) -> Path:
        return Path(data_root) / "metadata" / (self.meta_name or self.name) / self.split_names[split]

    def missing(self, data_root: Path) -> str | None:
        where = self.meta_dir(data_root, "test")
        if not (where / "image_ids.txt").is_file():
            return (f"{self.name}: not found (looked for {where}/image_ids.txt); point to it with "
                    f"--data-root DIR (DIR/metadata/{self.meta_name or self.name}/ and "
                    f"DIR/{self.image_dir or self.name}/)")
        return None

    def metadata_files(self, data_root: Path) -> list[Path]:
        folders = {self.meta_dir(data_root, split) for split in ("train", "val", "test")}
        return sorted(p for folder in folders if folder.is_dir() for p in folder.iterdir() if p.is_file())

    def read_records(self, data_root: Path, split: str) -> list[ImageRecord]:
        annotation = "none" if split == "train" else self.annotation
        records = read_split(self.meta_dir(data_root, split), annotation, self.loc_file)
        if self.extra_mask_file and split != "train":
            masks = {r.path: r for r in read_split(self.meta_dir(data_root, split), "mask", self.extra_mask_file)}
            for r in records:
                r.masks, r.ignore, r.has_roi_line = masks[r.path].masks, masks[r.path].ignore, True
        for r in records:
            if r.label >= self.num_classes:
                raise MetadataError(f"{self.meta_dir(data_root, split)}/class_labels.txt: class id {r.label} "
                                    f"of {r.path!r} is not below the {self.num_classes} classes of {self.name}")
        return records

    def splits(self, data_root: Path, budget) -> Splits:
        root = self.image_root(data_root)
        size = budget.input_size or self.image_size
        with_masks = self.annotation == "mask" or self.extra_mask_file is not None
        out = {}
        for split in ("train", "val", "test"):
            records = self.read_records(data_root, split)
            limit = budget.max_train_images if split == "train" else budget.max_eval_images
            records = _balanced_subset(records, limit)
            out[split] = MetadataImages(
                root, records, input_size=size, eval_size=self.eval_size, train=split == "train",
                with_boxes=split != "train" and self.annotation == "box",
                with_masks=split != "train" and with_masks, mask_threshold=self.mask_threshold,
                crop_from=budget.crop_from)
        return Splits(out["train"], out["val"], out["test"], self.num_classes)


def _balanced_subset(records: list[ImageRecord], limit: int | None) -> list[ImageRecord]:
    """The first `limit` records taken round-robin over classes (deterministic)."""
    if limit is None or limit >= len(records):
        return records
    by_class: dict[int, list[ImageRecord]] = {}
    for r in records:
        by_class.setdefault(r.label, []).append(r)
    queues = [list(v) for _, v in sorted(by_class.items())]
    out: list[ImageRecord] = []
    while len(out) < limit:
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return out


def load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise MetadataError(f"{path}: image file is missing") from None
    except (UnidentifiedImageError, OSError) as err:
        raise MetadataError(f"{path}: image cannot be read ({err})") from None


def load_mask(path: Path, size: tuple[int, int], threshold: int = 127) -> np.ndarray:
    try:
        with Image.open(path) as img:
            mask = np.asarray(img.convert("L")) > threshold
    except FileNotFoundError:
        raise MetadataError(f"{path}: mask file is missing") from None
    except (UnidentifiedImageError, OSError) as err:
        raise MetadataError(f"{path}: mask cannot be read ({err})") from None
    if mask.shape != (size[1], size[0]):
        raise MetadataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, its image is {size[0]}x{size[1]}")
    return mask


class MetadataImages(torch.utils.data.Dataset):
    """Images of one split. Items are dicts: image float32 [3,S,S] in [0,1], label, index,
    and for evaluation splits boxes [M,4] (eval frame, inclusive) and/or mask uint8 [E,E]
    (1 foreground, 0 background, 255 ignore)."""

    def __init__(self, root: Path, records: list[ImageRecord], input_size: int, eval_size: int,
                 train: bool, with_boxes: bool, with_masks: bool, mask_threshold: int = 127,
                 crop_from: int | None = None):
        self.root, self.records = Path(root), records
        self.input_size, self.eval_size = input_size, eval_size
        # random crops only for training; pixels are stored at the size the crop is taken from
        self.crop_from = crop_from if train and crop_from and crop_from > input_size else None
        self.stored_size = self.crop_from or input_size
        self.train, self.with_boxes, self.with_masks = train, with_boxes, with_masks
        self.mask_threshold = mask_threshold
        self.labels = [r.label for r in records]
        # Decoded, resized pixels are kept in memory when the split is small enough: training
        # revisits every image each epoch and PNG decoding would dominate small-CNN budgets.
        self._cache_pixels = len(records) * self.stored_size ** 2 * 3 <= PIXEL_CACHE_BYTES
        self._pixels: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        pixels, size = self._load_pixels(index)
        if self.crop_from is not None:  # seeded per cell by the runner, like the flip
            top = _random.randrange(self.crop_from - self.input_size + 1)
            left = _random.randrange(self.crop_from - self.input_size + 1)
            pixels = pixels[top:top + self.input_size, left:left + self.input_size]
        image = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
        if self.train and _random.random() < 0.5:  # seeded per cell by the runner
            image = image.flip(-1)
        item = {"image": image, "label": rec.label, "index": index}
        if self.with_boxes:
            boxes = torch.tensor(rec.boxes, dtype=torch.float32).reshape(-1, 4)
            w, h = size
            for x0, y0, x1, y1 in rec.boxes:
                if x1 >= w or y1 >= h or x0 < 0 or y0 < 0:
                    raise MetadataError(f"{self.root / rec.path}: box ({x0},{y0},{x1},{y1}) lies outside "
                                        f"the {w}x{h} image")
            scale = torch.tensor([self.eval_size / w, self.eval_size / h] * 2)
            item["boxes"] = (boxes * scale).floor().clamp(0, self.eval_size - 1)
        if self.with_masks:
            item["mask"] = self._mask(rec, size)
        return item

    def _load_pixels(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """uint8 [S,S,3] pixels at the stored size (input size, or crop_from), and the original (width, height)."""
        cached = self._pixels.get(index)
        if cached is not None:
            return cached
        rec = self.records[index]
        img = load_image(self.root / rec.path)
        size = img.size
        if rec.size is not None and rec.size != size:
            raise MetadataError(f"{self.root / rec.path}: image is {size[0]}x{size[1]} but image_sizes.txt says "
                                f"{rec.size[0]}x{rec.size[1]}")
        pixels = np.asarray(img.resize((self.stored_size, self.stored_size), Image.BILINEAR), dtype=np.uint8)
        if self._cache_pixels:
            self._pixels[index] = (pixels, size)
        return pixels, size

    def _mask(self, rec: ImageRecord, size: tuple[int, int]) -> torch.Tensor:
        fg = np.zeros((size[1], size[0]), dtype=bool)
        for m in rec.masks:
            fg |= load_mask(self.root / m, size, self.mask_threshold)
        out = fg.astype(np.uint8)
        if rec.ignore:
            out[load_mask(self.root / rec.ignore, size, self.mask_threshold)] = IGNORE
        resized = Image.fromarray(out).resize((self.eval_size, self.eval_size), Image.NEAREST)
        return torch.from_numpy(np.asarray(resized).copy())


