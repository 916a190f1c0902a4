"""The real-dataset plugins on tiny trees in their official layouts, and `bench data check`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.config import BUDGETS
from bench.data.check import check_dataset
from bench.data.metadata import ImageRecord, write_split
from bench.grid import build_cells
from bench.registry import get_dataset
from tests.harness import settings_at

SMOKE = BUDGETS["smoke"]
REAL = ("cub", "ilsvrc", "openimages", "glas", "camelyon16")
SIZE = (24, 20)  # width, height of every fixture image


def _image(path: Path, rng, size=SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _mask(path: Path, value: int = 255, size=SIZE, region=(slice(4, 12), slice(5, 15))) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size[1], size[0]), dtype=np.uint8)
    pixels[region] = value
    Image.fromarray(pixels).save(path)


def write_tree(name: str, root: Path, per_split: int = 4, fold: int = 0) -> Path:
    """A tiny copy of dataset `name` in its official layout (see the plugin's docstring)."""
    ds = get_dataset(name)()
    rng = np.random.default_rng(0)
    images = ds.image_root(root)
    folds = ds.check_splits()
    for folder, annotation in folds.items():
        records = []
        for i in range(per_split):
            label = i % 2
            rel = f"{folder}/c{label}/{i:03d}.png"
            _image(images / rel, rng)
            rec = ImageRecord(rel, label, SIZE if ds.annotation == "box" else None)
            if annotation == "box":
                rec.boxes = [(2, 3, 15, 17), (0, 0, 5, 5)][: 1 + i % 2]
            elif annotation == "mask":
                negative = ds.negative_class is not None and label == ds.negative_class
                if not negative:
                    value = 1 + i if ds.mask_threshold == 0 else 255  # GlaS: gland label maps
                    rec.masks = [f"{folder}/masks/{i:03d}.png"]
                    _mask(images / rec.masks[0], value)
                if name == "openimages":
                    rec.ignore = f"{folder}/ignore/{i:03d}.png"
                    _mask(images / rec.ignore, region=(slice(14, 18), slice(0, 6)))
            records.append(rec)
        split = folder
        meta = root / "metadata" / (ds.meta_name or ds.name)
        meta = meta / f"fold{fold}" / split if "valpx" in folds else meta / split
        write_split(meta, records, annotation)
    return root


@pytest.mark.parametrize("name", REAL)
def test_plugin_declares_its_layout(name):
    cls = get_dataset(name)
    doc = cls.__doc__ or ""
    assert "metadata/" in doc and cls.image_dir in doc
    assert cls.published_counts and cls.num_classes in (2, 100, 200, 1000)


@pytest.mark.parametrize("name", REAL)
def test_tiny_tree_loads_through_splits(name, tmp_path):
    root = write_tree(name, tmp_path)
    ds = get_dataset(name)()
    assert ds.missing(root) is None
    splits = ds.splits(root, SMOKE)
    assert len(splits.train) == len(splits.val) == len(splits.test) == 4
    assert splits.num_classes == ds.num_classes
    item = splits.test[1]
    assert item["image"].shape == (3, 224, 224) and item["label"] == 1
    if ds.annotation == "box":
        assert item["boxes"].shape == (2, 4) and "mask" not in item
    else:
        mask = item["mask"]
        assert mask.shape == (ds.eval_size, ds.eval_size) and set(mask.unique().tolist()) <= {0, 1, 255}
        assert (mask == 1).any() and ((mask == 255).any() == (name == "openimages"))
    if name == "camelyon16":  # normal patches (class 0) have no ROI
        assert (splits.test[0]["mask"] == 0).all()


@pytest.mark.parametrize("name", REAL)
def test_run_all_includes_present_and_skips_absent(name, tmp_path):
    root = write_tree(name, tmp_path)
    cells, skipped = build_cells(None, None, settings_at(root))
    present = {c.dataset for c in cells}
    reasons = dict(skipped)
    assert name in present and name not in reasons
    for other in REAL:
        if other != name:
            assert other not in present
            why = reasons[other]
            assert "\n" not in why and str(root / "metadata") in why
    with pytest.raises(FileNotFoundError, match="not found"):  # named explicitly: an error
        build_cells(None, [next(o for o in REAL if o != name)], settings_at(root))


def test_histology_fold_is_selectable(tmp_path):
    write_tree("glas", tmp_path, fold=3)
    cls = get_dataset("glas")
    assert "fold 0 not found" in cls().missing(tmp_path)
    ds = cls(cls.Config(fold=3))
    assert ds.missing(tmp_path) is None and len(ds.splits(tmp_path, SMOKE).val) == 4
    assert ds.meta_dir(tmp_path, "val").name == "valpx"
    with pytest.raises(ValueError, match="fold 7"):
        cls(cls.Config(fold=7))
    assert main(["data", "check", "--dataset", "glas", "--root", str(tmp_path), "--set", "glas.fold=3"]) == 0


@pytest.mark.parametrize("name", REAL)
def test_check_clean_tree_warns_on_counts_only(name, tmp_path, capsys):
    root = write_tree(name, tmp_path)
    report = check_dataset(get_dataset(name)(), root)
    assert report.ok, report.errors
    assert report.warnings and all("the published" in w for w in report.warnings)
    assert main(["data", "check", "--dataset", name, "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "0 errors" in out


def _meta(root: Path, name: str, split: str) -> Path:
    return get_dataset(name)().meta_dir(root, split)


def _check(name: str, root: Path, capsys, code: int = 1) -> str:
    got = main(["data", "check", "--dataset", name, "--root", str(root)])
    out = capsys.readouterr().out
    assert got == code, out
    return out


def test_check_missing_and_unreadable_images(tmp_path, capsys):
    root = write_tree("cub", tmp_path)
    (root / "CUB" / "test" / "c0" / "002.png").unlink()
    (root / "CUB" / "val" / "c1" / "001.png").write_bytes(b"not a png")
    out = _check("cub", root, capsys)
    assert "CUB/test/c0/002.png: image file is missing" in out
    assert "CUB/val/c1/001.png: image cannot be read" in out


def test_check_collects_every_malformed_line(tmp_path, capsys):
    root = write_tree("ilsvrc", tmp_path)
    path = _meta(root, "ilsvrc", "test") / "class_labels.txt"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].split(",")[0]
    lines[3] = lines[3].split(",")[0] + ",x"
    path.write_text("\n".join(lines) + "\n")
    out = _check("ilsvrc", root, capsys)
    assert "test/class_labels.txt:2: expected `<path>,<int class id>`" in out
    assert "test/class_labels.txt:4: class id 'x' is not a number" in out  # not stopped at the first


def test_check_id_in_one_file_only(tmp_path, capsys):
    root = write_tree("cub", tmp_path)
    meta = _meta(root, "cub", "val")
    labels = meta / "class_labels.txt"
    labels.write_text(labels.read_text() + "val/c0/999.png,0\n")
    ids = meta / "image_ids.txt"
    ids.write_text("".join(line + "\n" for line in ids.read_text().splitlines() + ["val/c1/777.png"]))
    out = _check("cub", root, capsys)
    assert "val/class_labels.txt:5: image id 'val/c0/999.png' is not listed in" in out
    assert "image id 'val/c1/777.png' (from image_ids.txt) has no class label" in out


def test_check_box_outside_the_image(tmp_path, capsys):
    root = write_tree("cub", tmp_path)
    loc = _meta(root, "cub", "test") / "localization.txt"
    lines = loc.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 2)[0] + ",30,17"
    loc.write_text("\n".join(lines) + "\n")
    out = _check("cub", root, capsys)
    assert "test/localization.txt:3: box (0,0,30,17) lies outside the 24x20 image" in out
    # without image_sizes.txt the real image size is used
    (_meta(root, "cub", "test") / "image_sizes.txt").write_text("")
    out = _check("cub", root, capsys)
    assert "test/localization.txt:3: box (0,0,30,17) lies outside the 24x20 image 'test/c1/001.png'" in out


def test_check_masks_wrong_size_or_unreadable(tmp_path, capsys):
    root = write_tree("openimages", tmp_path)
    _mask(root / "OpenImages" / "test" / "masks" / "001.png", size=(16, 16))
    (root / "OpenImages" / "val" / "ignore" / "002.png").write_bytes(b"junk")
    out = _check("openimages", root, capsys)
    assert "test/localization.txt:2: mask" in out and "masks/001.png is 16x16, its image 'test/c1/001.png' is 24x20" in out
    assert "val/localization.txt:3: ignore mask" in out and "ignore/002.png cannot be read" in out
    report = check_dataset(get_dataset("openimages")(), root)
    assert any("masks/001.png is 16x16" in w for w in report.warnings)
    assert not any("masks/001.png" in e for e in report.errors)
    assert any("ignore/002.png cannot be read" in e for e in report.errors)


def test_check_mask_of_another_size_is_a_warning_and_the_loader_reads_it(tmp_path):
    """The reference evaluator resizes image and mask to 224x224 separately: a mask of another
    size than its image is loadable, so `data check` warns and the split stays valid."""
    root = write_tree("openimages", tmp_path)
    _mask(root / "OpenImages" / "test" / "masks" / "001.png", size=(16, 16))
    ds = get_dataset("openimages")()
    report = check_dataset(ds, root, decode=True)
    assert report.ok, report.errors
    assert [w for w in report.warnings if "masks/001.png is 16x16" in w]
    test = ds.splits(root, BUDGETS["smoke"]).test
    masks = [item["mask"] for item in test]
    assert all(tuple(m.shape[-2:]) == tuple(masks[0].shape[-2:]) for m in masks)


def test_check_histology_reads_every_split(tmp_path, capsys):
    root = write_tree("camelyon16", tmp_path)
    (root / "Camelyon16" / "valcl" / "c1" / "003.png").unlink()
    out = _check("camelyon16", root, capsys)
    assert "Camelyon16/valcl/c1/003.png: image file is missing" in out
    assert "valcl 4 images" in out


@pytest.mark.parametrize("name", REAL)
def test_check_every_plugin_names_file_and_line(name, tmp_path, capsys):
    root = write_tree(name, tmp_path)
    loc = _meta(root, name, "test") / "localization.txt"
    lines = loc.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",1,2,3" if get_dataset(name).annotation == "box" else lines[1] + ",extra"
    loc.write_text("\n".join(lines) + "\n")
    out = _check(name, root, capsys)
    assert f"{loc}:2: expected `<path>," in out
    assert check_dataset(get_dataset(name)(), write_tree(name, tmp_path / "clean"), decode=True).ok


@pytest.mark.parametrize("name", ("glas", "camelyon16"))
def test_check_histology_mask_of_wrong_size(name, tmp_path, capsys):
    root = write_tree(name, tmp_path)
    ds = get_dataset(name)()
    _mask(ds.image_root(root) / "valpx" / "masks" / "001.png", size=(20, 24))
    out = _check(name, root, capsys, code=0)  # a warning: the loader reads it
    assert "WARNING" in out and "valpx/localization.txt:2: mask" in out and "is 20x24, its image 'valpx/c1/001.png' is 24x20" in out


def test_every_layout_runs_through_all_and_reaches_the_leaderboard(tmp_path):
    from tests.conftest import set_flags

    root = tmp_path / "data"
    for name in REAL:
        write_tree(name, root)
    flags = [x for f in set_flags() for x in ("--set", f)]
    code = main(["run", "--all", "--methods", "cam,center", "--budget", "smoke", "--seeds", "0",
                 "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"),
                 "--results", str(tmp_path / "board" / "results"), *flags])
    assert code == 0
    table = (tmp_path / "board" / "README.md").read_text()
    for name in (*REAL, "synth-objects", "synth-tissue"):
        assert f"## {name}\n" in table, name
    assert "Failed cells" not in table
