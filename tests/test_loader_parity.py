"""Ground truth at 224 through the real dataset path (metadata + files on disk -> MetadataDataset
-> items -> evaluators) against the reference evaluator's recipe computed with OpenCV
(clovaai/wsolevaluation evaluation.py: `resize_bbox`, `load_mask_image`, `get_mask`)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

from bench.config import BUDGETS
from bench.data.metadata import ImageRecord, write_split
from bench.dataset import MetadataDataset
from bench.dataset.metadata import nearest_index
from bench.method.base import Localization
from bench.runner import evaluate
from tests.metrics.cv2_oracle import cv2, cv2_levels

E = 224
BUDGET = dataclasses.replace(BUDGETS["smoke"], max_eval_images=None, max_train_images=None, input_size=E,
                             batch_size=4)


class BoxSet(MetadataDataset):
    name = "parity-boxes"
    annotation = "box"
    num_classes = 2


class MaskSet(MetadataDataset):
    name = "parity-masks"
    annotation = "mask"
    primary_metric = "PxAP"
    num_classes = 2


class BoxMaskSet(BoxSet):
    name = "parity-both"
    extra_mask_file = "localization_masks.txt"


# --- the reference's recipe, with OpenCV --------------------------------------------------------

def ref_box(box, size):
    """wsolevaluation `resize_bbox`: float64 multiply-then-divide, int() truncation."""
    w, h = map(float, size)
    x0, y0, x1, y1 = map(float, box)
    return (int(x0 * E / w), int(y0 * E / h), int(x1 * E / w), int(y1 * E / h))


def ref_load(path):
    mask = np.float32(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    return cv2.resize(mask, (E, E), interpolation=cv2.INTER_NEAREST)


def ref_mask(root, masks, ignore):
    """wsolevaluation `get_mask` (an image without mask is all background, a superset of it)."""
    fg = np.zeros((E, E), bool)
    for m in masks:
        fg |= ref_load(root / m) > 0.5
    out = fg.astype(np.uint8)
    if ignore:
        out += 255 * ((ref_load(root / ignore) > 0.5) & ~fg).astype(np.uint8)
    return out


# --- files on disk ------------------------------------------------------------------------------

def exact_coords(rng, n, size):
    """Coordinates in [0, size) whose `x * 224 / size` is an integer (where float32 rounding of
    224 / size lands one below), mixed with arbitrary ones."""
    step = size // math.gcd(size, E)
    exact = rng.integers(0, max(1, (size - 1) // step + 1), n) * step
    return np.where(rng.random(n) < 0.5, exact, rng.integers(0, size, n))


def random_boxes(rng, w, h, count):
    boxes = []
    for _ in range(count):
        xs = np.sort(exact_coords(rng, 2, w))
        ys = np.sort(exact_coords(rng, 2, h))
        boxes.append((int(xs[0]), int(ys[0]), int(xs[1]), int(ys[1])))
    return boxes


def save_image(path, w, h, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    # a smooth random image: its red channel is the test method's score map
    small = rng.random((max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    Image.fromarray((big * 255).astype(np.uint8)).save(path)


def save_mask(path, rng, w, h, mode, p_on=0.3):
    """A random mask of `mode` whose non-zero bytes are mostly small (1..4: foreground for the
    reference, background under a > 127 threshold) laid out in blobs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blobs = cv2.resize(rng.random((max(2, h // 9), max(2, w // 7))).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_LINEAR) < p_on
    values = rng.choice(np.array([1, 2, 3, 4, 60, 128, 200, 255], np.uint8), size=(h, w))
    grey = np.where(blobs, values, 0).astype(np.uint8)
    if mode == "L":
        img = Image.fromarray(grey)
    elif mode == "1":
        img = Image.fromarray(grey > 0).convert("1")
    elif mode == "RGB":  # colours whose grey byte (libpng's) is 0 for some, not for others
        rgb = np.stack([grey, np.where(blobs, rng.integers(0, 3, (h, w)), 0), grey // 2], -1).astype(np.uint8)
        img = Image.fromarray(rgb)
    elif mode == "P":
        img = Image.fromarray(grey).convert("P")
    elif mode == "LA":
        img = Image.fromarray(np.stack([grey, np.full_like(grey, 17)], -1), mode="LA")
    elif mode == "RGBA":
        img = Image.fromarray(np.stack([grey, grey, grey // 3, 255 - grey], -1).astype(np.uint8), mode="RGBA")
    elif mode == "I;16":  # 16-bit: OpenCV keeps the high byte (values below 256 read as 0)
        img = Image.fromarray(grey.astype(np.uint16) * np.where(rng.random((h, w)) < 0.5, 1, 257).astype(np.uint16))
    else:
        raise ValueError(mode)
    img.save(path)


MODES = ("L", "1", "RGB", "P", "LA", "RGBA", "I;16")


def write_box_tree(root, rng, n=10):
    recs = []
    sizes = [(332, 500), (17, 19), (300, 201), (448, 96)] + [tuple(int(v) for v in rng.integers(13, 600, 2))
                                                          for _ in range(n - 4)]
    for i, (w, h) in enumerate(sizes):
        rel = f"img/{i:03d}.png"
        save_image(root / "parity" / rel, w, h, rng)
        boxes = random_boxes(rng, w, h, 1 + i % 3)
        if i == 0:  # CUB White_Necked_Raven_0031's case: 166 of 332 -> 112 (float32: 111)
            boxes.append((166, 0, 331, 499))
        recs.append(ImageRecord(rel, i % 2, (w, h), boxes=boxes))
    return recs


def write_mask_records(root, rng, recs, img_sizes, own_sizes=True):
    """Instance masks (with `own_sizes`, of sizes that differ from the image's and do not divide
    224) and ignore masks overlapping them; one image without ROI, one without ignore mask."""
    for i, rec in enumerate(recs):
        rec.masks, rec.ignore = [], None
        if i == 1:
            continue  # no ROI: all background
        iw, ih = img_sizes[i]
        for k in range(1 + i % 3):
            w, h = (iw, ih) if k == 0 or not own_sizes else tuple(int(v) for v in rng.integers(11, 400, 2))
            rel = f"masks/{i:03d}_{k}.png"
            save_mask(root / "parity" / rel, rng, w, h, MODES[(i + k) % len(MODES)])
            rec.masks.append(rel)
        if i != 2:
            rel = f"masks/{i:03d}_ignore.png"
            w, h = tuple(int(v) for v in rng.integers(11, 400, 2)) if own_sizes else (iw, ih)
            save_mask(root / "parity" / rel, rng, w, h, MODES[(i + 3) % len(MODES)], p_on=0.4)
            rec.ignore = rel


def write_meta(root, name, recs, annotation, loc_file="localization.txt"):
    for split in ("train", "val", "test"):
        write_split(root / "metadata" / name / split, recs, annotation, loc_file)


def load(cls, root):
    cls.image_dir = "parity"
    return cls().splits(root, BUDGET).test


# --- loaders ------------------------------------------------------------------------------------

def test_nearest_index_is_opencvs_mapping():
    for src in list(range(1, 700)) + [1063, 1066, 1600]:
        probe = np.arange(src, dtype=np.float32)[None].repeat(2, 0)
        want = cv2.resize(probe, (E, 2), interpolation=cv2.INTER_NEAREST)[0].astype(np.int64)
        assert np.array_equal(nearest_index(src, E), want), src


def test_boxes_are_the_references(tmp_path):
    rng = np.random.default_rng(0)
    recs = write_box_tree(tmp_path, rng, n=14)
    write_meta(tmp_path, BoxSet.name, recs, "box")
    split = load(BoxSet, tmp_path)
    exact_hits = 0
    for i, rec in enumerate(recs):
        got = split[i]["boxes"]
        want = torch.tensor([ref_box(b, rec.size) for b in rec.boxes], dtype=torch.float32)
        assert torch.equal(got, want), (rec.path, rec.size, rec.boxes, got, want)
        w, h = rec.size
        scale32 = np.array([E / w, E / h] * 2, np.float32)
        old = np.floor(np.asarray(rec.boxes, np.float32) * scale32)
        exact_hits += int((old != want.numpy()).sum())
    assert exact_hits > 0  # the set holds boxes where float32 arithmetic would round differently


def test_box_outside_its_image_is_an_error(tmp_path):
    save_image(tmp_path / "parity" / "a.png", 20, 10, np.random.default_rng(0))
    write_meta(tmp_path, BoxSet.name, [ImageRecord("a.png", 0, (20, 10), boxes=[(0, 0, 19, 9)])], "box")
    split = load(BoxSet, tmp_path)
    split.records[0].boxes = [(0, 0, 20, 9)]
    with pytest.raises(ValueError, match="outside the 20x10 image"):
        split[0]


@pytest.mark.parametrize("own_sizes", [False, True], ids=["image-sized", "own-sized"])
def test_masks_are_the_references(tmp_path, own_sizes):
    """Masks of the image's size (the old loader's only case) and of their own sizes (the
    reference resizes each mask file from its own size)."""
    rng = np.random.default_rng(1)
    recs, sizes = [], []
    for i in range(12):
        w, h = (int(v) for v in rng.integers(9, 500, 2))
        rel = f"img/{i:03d}.png"
        save_image(tmp_path / "parity" / rel, w, h, rng)
        recs.append(ImageRecord(rel, i % 2, (w, h)))
        sizes.append((w, h))
    write_mask_records(tmp_path, rng, recs, sizes, own_sizes)
    write_meta(tmp_path, MaskSet.name, recs, "mask")
    split = load(MaskSet, tmp_path)
    overlap = small_bytes = 0
    for i, rec in enumerate(recs):
        got = split[i]["mask"].numpy()
        want = ref_mask(tmp_path / "parity", rec.masks, rec.ignore)
        assert got.dtype == np.uint8 and got.shape == (E, E)
        assert np.array_equal(got, want), (rec.path, int((got != want).sum()))
        if rec.ignore and rec.masks:
            fg = want == 1
            overlap += int(((ref_load(tmp_path / "parity" / rec.ignore) > 0.5) & fg).sum())
        for m in rec.masks:
            grey = cv2.imread(str(tmp_path / "parity" / m), cv2.IMREAD_GRAYSCALE)
            small_bytes += int(((grey > 0) & (grey <= 127)).sum())
    assert overlap > 0 and small_bytes > 0  # the cases where the old loader differed occur


def test_mask_threshold_setting_still_applies(tmp_path):
    """A dataset may ask for a higher grey threshold (`mask_threshold`); 0 is the reference's."""
    rng = np.random.default_rng(2)
    save_image(tmp_path / "parity" / "a.png", 50, 40, rng)
    grey = np.zeros((40, 50), np.uint8)
    grey[5:20, 5:30], grey[25:35, 10:40] = 100, 200
    Image.fromarray(grey).save(tmp_path / "parity" / "m.png")
    write_meta(tmp_path, MaskSet.name, [ImageRecord("a.png", 0, (50, 40), masks=["m.png"])], "mask")
    default = load(MaskSet, tmp_path)[0]["mask"].numpy()
    assert np.array_equal(default, ref_mask(tmp_path / "parity", ["m.png"], None))

    class High(MaskSet):
        mask_threshold = 127
    high = load(High, tmp_path)[0]["mask"].numpy()
    want = (cv2.resize(grey, (E, E), interpolation=cv2.INTER_NEAREST) > 127).astype(np.uint8)
    assert np.array_equal(high, want) and high.sum() < default.sum()


# --- end to end: disk -> dataset -> evaluator -> metrics ----------------------------------------

class RedChannel:
    """Score map = the image's red channel (as the loader resized it to 224)."""
    name = "red-channel"

    def localize(self, images, classes):
        return Localization(cams=images[:, 0].clone())


def oracle_scoremap(path):
    """Red channel after the reference transform (PIL bilinear to 224), min-max in float32."""
    with Image.open(path) as img:
        red = np.asarray(img.convert("RGB").resize((E, E), Image.BILINEAR))[..., 0]
    x = red.astype(np.float32) / np.float32(255.0)
    x = x - x.min()
    return x / x.max() if x.max() > 0 else np.zeros_like(x)


def oracle_box_metrics(maps, gts, interval=0.001):
    deltas = (0.3, 0.5, 0.7)
    levels = (np.arange(0, 1, interval) * 255).astype(np.int64)
    v1 = np.zeros((3, 256)); v2 = np.zeros((3, 256))
    for s, gt in zip(maps, gts):
        a, b = cv2_levels((s * 255).astype(np.uint8), np.asarray(gt, np.float64), deltas)
        v1 += a; v2 += b
    v1, v2 = v1[:, levels] / len(maps), v2[:, levels] / len(maps)
    return {"MaxBoxAcc": 100 * v1[1].max(), "MaxBoxAccV2": 100 * v2.max(1).mean()}


def oracle_pxap(maps, masks, interval=0.001):
    """wsolevaluation MaskEvaluator.accumulate + compute."""
    edges = np.append(np.arange(0, 1, interval), [1.0, 2.0, 3.0])
    t = np.zeros(len(edges) - 1); f = np.zeros(len(edges) - 1)
    for s, m in zip(maps, masks):
        t += np.histogram(s[m == 1], bins=edges)[0]
        f += np.histogram(s[m == 0], bins=edges)[0]
    tp = t[::-1].cumsum(); fn = t.sum() - tp
    fp = f[::-1].cumsum()
    nz = (tp + fp) != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return float((precision[1:] * np.diff(recall))[nz[1:]].sum() * 100)


def test_end_to_end_metrics_match_an_opencv_computation(tmp_path):
    rng = np.random.default_rng(3)
    recs = write_box_tree(tmp_path, rng, n=8)
    mask_recs = [dataclasses.replace(r, boxes=[]) for r in recs]
    write_mask_records(tmp_path, np.random.default_rng(4), mask_recs, [r.size for r in recs])
    for split in ("train", "val", "test"):
        meta = tmp_path / "metadata" / BoxMaskSet.name / split
        write_split(meta, recs, "box")
        write_split(meta, mask_recs, "mask", BoxMaskSet.extra_mask_file)
    ds = BoxMaskSet()
    BoxMaskSet.image_dir = "parity"
    test = ds.splits(tmp_path, BUDGET).test
    metrics, _ = evaluate(RedChannel(), test, ds, BUDGET, torch.device("cpu"))

    root = tmp_path / "parity"
    maps = [oracle_scoremap(root / r.path) for r in recs]
    gts = [[ref_box(b, r.size) for b in r.boxes] for r in recs]
    want = oracle_box_metrics(maps, gts)
    want["PxAP"] = oracle_pxap(maps, [ref_mask(root, r.masks, r.ignore) for r in mask_recs])
    for key, value in want.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), (key, metrics[key], value)


# --- histology: which class map a negative image is scored on -----------------------------------

class RecordsClasses:
    name = "records-classes"

    def __init__(self):
        self.seen = []

    def localize(self, images, classes):
        self.seen += classes.tolist()
        return Localization(cams=images[:, 0].clone())


@pytest.mark.parametrize("setting, normal_class", [("label", 0), ("roi", 1)])
def test_camelyon16_negative_map_setting(tmp_path, setting, normal_class):
    from bench.registry import get_dataset

    cls = get_dataset("camelyon16")
    assert cls.Config().negative_map == "label"  # the seed authors' evaluator (own label)
    ds = cls(dataclasses.replace(cls.Config(), negative_map=setting))
    labels = torch.tensor([0, 1, 0, 1])
    assert ds.localization_classes(labels).tolist() == [normal_class, 1, normal_class, 1]
    # through the evaluation path: normal patches (no mask) are scored on that map
    rng = np.random.default_rng(5)
    recs = []
    for i in range(4):
        rel = f"p/{i}.png"
        save_image(tmp_path / "Camelyon16" / rel, 40, 40, rng)
        rec = ImageRecord(rel, i % 2, None)
        if i % 2:
            rec.masks = [f"p/{i}_mask.png"]
            save_mask(tmp_path / "Camelyon16" / rec.masks[0], rng, 40, 40, "L")
        recs.append(rec)
    for folder in ("train", "valcl", "valpx", "test"):
        write_split(tmp_path / "metadata" / "Camelyon16" / "fold0" / folder, recs,
                    "none" if folder in ("train", "valcl") else "mask")
    method = RecordsClasses()
    metrics, _ = evaluate(method, ds.splits(tmp_path, BUDGET).test, ds, BUDGET, torch.device("cpu"))
    assert method.seen == [normal_class, 1, normal_class, 1] and 0 <= metrics["PxAP"] <= 100


def test_negative_map_must_be_known():
    from bench.registry import get_dataset

    cls = get_dataset("camelyon16")
    with pytest.raises(ValueError, match="negative_map 'tumour'"):
        cls(dataclasses.replace(cls.Config(), negative_map="tumour"))
