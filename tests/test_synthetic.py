"""Tests of the synthetic dataset generators (bench/data/synthetic.py)."""
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import synthetic as syn

SMALL_OBJ = syn.SynthObjectsConfig(n_train=6, n_val=2, n_test=4)
SMALL_TIS = syn.SynthTissueConfig(n_train=6, n_val=2, n_test=4)
SMALL_SHIFTED = syn.SynthTissueShiftedConfig(n_train=6, n_val=2, n_test=4)
SMALL = {"synth-objects": SMALL_OBJ, "synth-tissue": SMALL_TIS, "synth-tissue-shifted": SMALL_SHIFTED}


def _files(root: Path):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _lines(path: Path):
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    for name, cfg in SMALL.items():
        syn.prepare(name, root, cfg)
    return root


@pytest.fixture(scope="module")
def stats_root(tmp_path_factory):
    """Enough objects per class for the class-leakage statistics."""
    root = tmp_path_factory.mktemp("synth_stats")
    cfg = syn.SynthObjectsConfig(seed=3, n_train=60, n_val=0, n_test=0)
    syn.generate_objects(root, cfg)
    return root, cfg


# ------------------------------------------------------------------ determinism
@pytest.mark.parametrize("name", list(syn.GENERATORS))
def test_same_seed_byte_identical_other_seed_differs(tmp_path, name):
    cfg = dataclasses.replace(SMALL[name], n_train=3, n_val=1, n_test=2)
    syn.prepare(name, tmp_path / "a", cfg)
    syn.prepare(name, tmp_path / "b", cfg)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and a == b
    syn.prepare(name, tmp_path / "c", dataclasses.replace(cfg, seed=cfg.seed + 1))
    c = _files(tmp_path / "c")
    pngs = [k for k in a if k.endswith(".png") and not k.endswith("_mask.png")]
    assert pngs and all(a[k] != c.get(k) for k in pngs)


def test_sample_independent_of_counts():
    # each image has its own random stream: growing a split keeps the earlier images
    a = syn._objects_sample(SMALL_OBJ, "test", 1, 2)
    b = syn._objects_sample(dataclasses.replace(SMALL_OBJ, n_test=50), "test", 1, 2)
    assert np.array_equal(a[0], b[0]) and a[2] == b[2]


# ------------------------------------------------------------------ prepare / cache
def test_prepare_caches_and_regenerates_on_change(tmp_path):
    cfg = dataclasses.replace(SMALL_OBJ, n_train=2, n_val=1, n_test=1)
    root = syn.prepare("synth-objects", tmp_path, cfg)
    assert root == tmp_path
    marker = tmp_path / "synth-objects" / "GENERATOR.json"
    doc = json.loads(marker.read_text())
    assert doc["name"] == "synth-objects" and doc["config"]["n_train"] == 2
    mtime = marker.stat().st_mtime_ns
    syn.prepare("synth-objects", tmp_path, cfg)                 # cached: untouched
    assert marker.stat().st_mtime_ns == mtime
    syn.prepare("synth-objects", tmp_path, dataclasses.replace(cfg, n_train=3))
    ids = _lines(tmp_path / "metadata/synth-objects/train/image_ids.txt")
    assert len(ids) == 3 * cfg.num_classes
    # an interrupted generation (no GENERATOR.json) is redone
    marker.unlink()
    (tmp_path / "synth-objects" / ids[0]).unlink()
    syn.prepare("synth-objects", tmp_path, dataclasses.replace(cfg, n_train=3))
    assert (tmp_path / "synth-objects" / ids[0]).exists() and marker.exists()
    with pytest.raises(KeyError):
        syn.prepare("nope", tmp_path)
    with pytest.raises(TypeError):
        syn.prepare("synth-tissue", tmp_path, cfg)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SMALL_OBJ.seed = 3  # type: ignore[misc]
    assert set(syn.GENERATORS) == {"synth-objects", "synth-tissue", "synth-tissue-shifted"}


# ------------------------------------------------------------------ metadata format
def _parse(root: Path, name: str, split: str):
    meta = root / "metadata" / name / split
    ids = _lines(meta / "image_ids.txt")
    labels = {}
    for line in _lines(meta / "class_labels.txt"):
        p, c = line.split(",")
        labels[p] = int(c)
    sizes = {}
    for line in _lines(meta / "image_sizes.txt"):
        p, w, h = line.split(",")
        sizes[p] = (int(w), int(h))
    loc = {}
    for line in _lines(meta / "localization.txt"):
        p, *rest = line.split(",")
        loc.setdefault(p, []).append(rest)
    return ids, labels, sizes, loc


@pytest.mark.parametrize("name", list(syn.GENERATORS))
@pytest.mark.parametrize("split", syn.SPLITS)
def test_metadata_consistent(small_root, name, split):
    cfg = SMALL[name]
    ids, labels, sizes, loc = _parse(small_root, name, split)
    per_class = [cfg.count(split, c) for c in range(cfg.num_classes)]
    assert len(ids) == len(set(ids)) == sum(per_class)
    assert set(ids) == set(labels) == set(sizes) == set(loc)
    counts = np.bincount(list(labels.values()), minlength=cfg.num_classes)
    assert counts.tolist() == per_class            # class balance (the shifted variant's is uneven)
    for p in ids:
        assert p.startswith(f"{split}/{cfg.class_names()[labels[p]]}/") and p.endswith(".png")
        img = Image.open(small_root / name / p)
        assert img.mode == "RGB" and img.size == sizes[p] == (cfg.image_size, cfg.image_size)


@pytest.mark.parametrize("split", syn.SPLITS)
def test_object_boxes_equal_mask_extent(small_root, split):
    name = "synth-objects"
    ids, labels, sizes, loc = _parse(small_root, name, split)
    masks = {}
    for line in _lines(small_root / "metadata" / name / split / "localization_masks.txt"):
        p, m, ign = line.split(",")
        assert m and ign == ""
        masks[p] = m
    assert set(masks) == set(ids)
    for p in ids:
        (box,) = loc[p]
        x0, y0, x1, y1 = map(int, box)
        w, h = sizes[p]
        assert 0 <= x0 <= x1 < w and 0 <= y0 <= y1 < h
        m = Image.open(small_root / name / masks[p])
        assert m.mode == "L" and m.size == (w, h)
        arr = np.asarray(m)
        assert set(np.unique(arr)) <= {0, 255}
        ys, xs = np.nonzero(arr)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x0, y0, x1, y1)


@pytest.mark.parametrize("split", syn.SPLITS)
def test_tissue_masks(small_root, split):
    name = "synth-tissue"
    cfg = SMALL_TIS
    ids, labels, sizes, loc = _parse(small_root, name, split)
    for p in ids:
        assert len(loc[p]) == 1                              # one line per image
        (m, ign), = loc[p]
        assert ign == ""
        if labels[p] == 0:
            assert m == ""                                   # fully negative image
            assert not (small_root / name / (p[:-4] + "_mask.png")).exists()
        else:
            arr = np.asarray(Image.open(small_root / name / m))
            assert arr.shape == (cfg.image_size, cfg.image_size)
            assert set(np.unique(arr)) <= {0, 255}
            frac = (arr > 0).mean()
            assert cfg.roi_fraction[0] - 0.02 <= frac <= cfg.roi_fraction[1] + 0.02


# ------------------------------------------------------------------ class leakage
def _object_stats(root, cfg):
    ids, labels, sizes, loc = _parse(root, "synth-objects", "train")
    colours, centres, y = [], [], []
    for p in ids:
        img = np.asarray(Image.open(root / "synth-objects" / p), dtype=np.float64)
        mask = np.asarray(Image.open(root / "synth-objects" / (p[:-4] + "_mask.png"))) > 0
        colours.append(img[mask].mean(0))
        x0, y0, x1, y1 = map(int, loc[p][0])
        centres.append(((x0 + x1) / 2, (y0 + y1) / 2))
        y.append(labels[p])
    return np.array(colours), np.array(centres), np.array(y)


def _max_mean_gap_in_se(x, y, k):
    """Largest difference of per-class means, in units of its standard error."""
    worst = 0.0
    for a in range(k):
        for b in range(a + 1, k):
            xa, xb = x[y == a], x[y == b]
            se = np.sqrt(xa.var(0, ddof=1) / len(xa) + xb.var(0, ddof=1) / len(xb))
            worst = max(worst, float(np.max(np.abs(xa.mean(0) - xb.mean(0)) / se)))
    return worst


def _nearest_centroid_cv_accuracy(x, y, k, folds=5):
    x = (x - x.mean(0)) / x.std(0)
    idx = np.arange(len(y))
    correct = 0
    for f in range(folds):
        test = idx % folds == f
        cents = np.stack([x[~test & (y == c)].mean(0) for c in range(k)])
        pred = np.argmin(((x[test, None, :] - cents[None]) ** 2).sum(-1), 1)
        correct += int((pred == y[test]).sum())
    return correct / len(y)


def test_class_not_given_away_by_colour_or_position(stats_root):
    root, cfg = stats_root
    colours, centres, y = _object_stats(root, cfg)
    k = cfg.num_classes
    # per-class means of object colour and box centre agree within sampling error
    # (k*(k-1)/2 pairs x 3 or 2 coordinates: 4.5 standard errors is a loose family-wise bar)
    assert _max_mean_gap_in_se(colours, y, k) < 4.5
    assert _max_mean_gap_in_se(centres, y, k) < 4.5
    # box centre distributions overlap: every class covers most of the image
    for c in range(k):
        cx = centres[y == c]
        assert np.ptp(cx[:, 0]) > cfg.image_size / 3 and np.ptp(cx[:, 1]) > cfg.image_size / 3
    # and a nearest-centroid classifier on (colour, centre) is near chance
    acc = _nearest_centroid_cv_accuracy(np.hstack([colours, centres]), y, k)
    chance = 1.0 / k
    assert acc < chance + 0.15, acc


# ------------------------------------------------------------------ timing
def test_default_suite_generation_time(tmp_path, capsys):
    times = {}
    for name in syn.GENERATORS:
        t0 = time.perf_counter()
        syn.prepare(name, tmp_path)
        times[name] = time.perf_counter() - t0
    with capsys.disabled():
        print("\n" + ", ".join(f"{n}: {t:.1f} s" for n, t in times.items())
              + f", total {sum(times.values()):.1f} s (default configs)")
    counts = {n: len(_lines(tmp_path / "metadata" / n / "test" / "image_ids.txt"))
              for n in syn.GENERATORS}
    assert counts == {"synth-objects": 200, "synth-tissue": 100, "synth-tissue-shifted": 100}
