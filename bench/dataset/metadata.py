"""Datasets in the field's metadata format (docs/protocol.md, "On-disk format"): images under
`<root>/<image_dir>` and one folder of text files per split; items resized for the network and
their boxes and masks brought to the evaluation frame."""
from __future__ import annotations

import collections
import os
import random as _random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.data.images import checked_path, read_image, with_image
from bench.data.metadata import ImageRecord, MetadataError, read_split
from bench.dataset.base import Dataset, Splits
from bench.dataset.protocol import IGNORE

PIXEL_CACHE_BYTES = 1 << 30  # splits whose decoded pixels fit are decoded once per process


class DecodedFiles:
    """Decoded image and mask files kept for the life of the process, up to `limit` bytes (the
    least recently used dropped first): a pool worker runs cell after cell on the same files, and
    decoding them again was a tenth of a small-CNN evaluation pass. Keyed by the file's resolved
    path, inode, size and modification time (a rewritten file is decoded again) and by what was
    made of it (`tag`: the resize, the threshold); the path is checked as every read checks it.
    Values are read-only arrays (or tuples holding one) shared by every reader."""

    def __init__(self, limit: int):
        self.limit, self.nbytes = limit, 0
        self._items: collections.OrderedDict = collections.OrderedDict()

    def get(self, path: Path, root: Path | None, what: str, tag: tuple, decode):
        resolved = checked_path(path, root, what)
        st = os.stat(resolved)
        key = (str(resolved), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, tag)
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            return hit[0]
        value = decode()
        array = value[0] if isinstance(value, tuple) else value
        array.setflags(write=False)
        self._items[key] = (value, array.nbytes)
        self.nbytes += array.nbytes
        while self.nbytes > self.limit and len(self._items) > 1:
            self.nbytes -= self._items.popitem(last=False)[1][1]
        return value

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


DECODED = DecodedFiles(PIXEL_CACHE_BYTES)


class MetadataDataset(Dataset):
    """A dataset in the metadata format: images under `<root>/<image_dir>` and split folders
    `<root>/metadata/<meta_name>/<split>/`."""

    image_dir: str = ""  # default: the dataset name
    meta_name: str = ""  # default: the dataset name
    split_names: dict[str, str] = {"train": "train", "val": "val", "test": "test"}
    image_size: int = 224  # network input size (square) unless the budget sets one
    loc_file: str = "localization.txt"  # file with the test-time annotation
    extra_mask_file: str | None = None  # optional mask file for box datasets (adds PxAP)
    # Mask pixels whose grey byte exceeds this are foreground. 0 (any non-zero byte) is what
    # the reference evaluators do (wsolevaluation for OpenImages, sbelharbi/negev's
    # dlib/datasets/wsol_data_core.py `get_mask` for GlaS and Camelyon16): `> 0.5` on the bytes.
    mask_threshold: int = 0
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


def load_image(path: Path, root: Path | None = None) -> Image.Image:
    """RGB pixels of an image file (a regular file inside `root`; errors name the file)."""
    return read_image(path, root, mode="RGB")


def read_grey(path: Path, root: Path | None = None) -> np.ndarray:
    """uint8 [H, W] grey bytes of a mask file as the reference evaluator reads them
    (`cv2.imread(path, cv2.IMREAD_GRAYSCALE)`, OpenCV with libpng): colour and palette pixels
    become `(9797 R + 19234 G + 3737 B) >> 15` (libpng's rgb-to-grey, truncating), alpha is
    dropped, 16-bit samples keep their high byte, 1/2/4-bit grey is scaled to 0..255."""
    def grey(img) -> np.ndarray:
        if img.format == "JPEG":
            img.draft("L", img.size)  # libjpeg's grey output: the luma channel as decoded
        mode = img.mode
        if mode in ("L", "1"):
            return np.asarray(img.convert("L"), dtype=np.uint8)
        if mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
            return (np.asarray(img, dtype=np.int64) >> 8).clip(0, 255).astype(np.uint8)
        if mode in ("LA", "La"):
            return np.asarray(img.getchannel(0), dtype=np.uint8)
        rgb = np.asarray(img.convert("RGB"), dtype=np.int64)
        return ((9797 * rgb[..., 0] + 19234 * rgb[..., 1] + 3737 * rgb[..., 2]) >> 15).astype(np.uint8)

    return with_image(path, root, "mask", grey)


def nearest_index(src: int, dst: int) -> np.ndarray:
    """Source index of each destination pixel under OpenCV's INTER_NEAREST:
    `min(floor(d * (1 / (dst / src))), src - 1)` in float64, as OpenCV computes it (top-left
    mapping, not PIL's pixel centres; the reciprocal of the ratio, not src / dst, rounds
    differently for some sizes)."""
    inv = 1.0 / (float(dst) / float(src))
    return np.minimum(np.floor(np.arange(dst, dtype=np.float64) * inv).astype(np.int64), src - 1)


def resize_nearest(a: np.ndarray, size: int) -> np.ndarray:
    """[H, W] -> [size, size] with OpenCV's INTER_NEAREST mapping."""
    return a[nearest_index(a.shape[0], size)[:, None], nearest_index(a.shape[1], size)[None, :]]


def load_mask(path: Path, eval_size: int, threshold: int = 0, root: Path | None = None) -> np.ndarray:
    """bool [E, E], read-only: a mask file resized from its own size to the evaluation frame
    (OpenCV nearest) and thresholded, grey byte > `threshold`. The reference takes `> 0.5` of the
    float bytes, i.e. any non-zero byte (threshold 0); thresholding before or after a nearest
    resize gives the same pixels. Decoded once per process (`DECODED`)."""
    return DECODED.get(path, root, "mask", ("mask", eval_size, threshold),
                       lambda: resize_nearest(read_grey(path, root) > threshold, eval_size))


class MetadataImages(torch.utils.data.Dataset):
    """Images of one split. Items are dicts: image float32 [3,S,S] in [0,1], label, index,
    and for evaluation splits boxes [M,4] (eval frame, inclusive) and/or mask uint8 [E,E]
    (1 foreground, 0 background, 255 ignore)."""

    def __init__(self, root: Path, records: list[ImageRecord], input_size: int, eval_size: int,
                 train: bool, with_boxes: bool, with_masks: bool, mask_threshold: int = 0,
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
            item["boxes"] = self._boxes(rec, rec.size or size)
        if self.with_masks:
            item["mask"] = self._mask(rec)
        return item

    def _load_pixels(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """uint8 [S,S,3] pixels at the stored size (input size, or crop_from), and the original (width, height)."""
        cached = self._pixels.get(index)
        if cached is not None:
            return cached
        rec = self.records[index]
        path = self.root / rec.path

        def decode():
            img = load_image(path, self.root)
            pixels = np.asarray(img.resize((self.stored_size, self.stored_size), Image.BILINEAR), dtype=np.uint8)
            return pixels, img.size

        if self._cache_pixels:
            pixels, size = DECODED.get(path, self.root, "image", ("rgb", self.stored_size), decode)
        else:
            pixels, size = decode()
        if rec.size is not None and rec.size != size:
            raise MetadataError(f"{path}: image is {size[0]}x{size[1]} but image_sizes.txt says "
                                f"{rec.size[0]}x{rec.size[1]}")
        if self._cache_pixels:
            self._pixels[index] = (pixels, size)
        return pixels, size

    def _boxes(self, rec: ImageRecord, size: tuple[int, int]) -> torch.Tensor:
        """Boxes in the evaluation frame, the reference's `resize_bbox`: `int(x * E / w)` in
        float64 (multiply, then divide; truncation = floor for x >= 0), with the image size of
        image_sizes.txt when given; no clamp (a box inside the image stays below E)."""
        w, h = size
        for x0, y0, x1, y1 in rec.boxes:
            if x1 >= w or y1 >= h or x0 < 0 or y0 < 0:
                raise MetadataError(f"{self.root / rec.path}: box ({x0},{y0},{x1},{y1}) lies outside "
                                    f"the {w}x{h} image")
        boxes = np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4)
        resized = np.trunc(boxes * float(self.eval_size) / np.array([w, h, w, h], dtype=np.float64))
        return torch.from_numpy(resized.astype(np.float32))

    def _mask(self, rec: ImageRecord) -> torch.Tensor:
        """uint8 [E, E] ground truth, the reference's `get_mask`: each mask file resized from its
        own size (OpenCV nearest) and thresholded, instances ORed; ignore = the ignore mask's
        region minus the foreground (foreground wins where they overlap)."""
        E = self.eval_size
        fg = np.zeros((E, E), dtype=bool)
        for m in rec.masks:
            fg |= load_mask(self.root / m, E, self.mask_threshold, self.root)
        out = fg.astype(np.uint8)
        if rec.ignore:
            out[load_mask(self.root / rec.ignore, E, self.mask_threshold, self.root) & ~fg] = IGNORE
        return torch.from_numpy(out)
