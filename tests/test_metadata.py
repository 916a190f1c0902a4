"""Bad input gets a clear error naming the file and line."""
from pathlib import Path

import pytest
import torch

from bench.config import BUDGETS
from bench.data.metadata import MetadataError, read_split
from tests.fixtures import TinyBoxes, write_box_tree

SMOKE = BUDGETS["smoke"]


@pytest.fixture
def tree(tmp_path):
    return write_box_tree(tmp_path)


def meta(root: Path, split="test") -> Path:
    return root / "metadata" / "tiny-boxes" / split


def test_reads_a_valid_tree(tree):
    splits = TinyBoxes().splits(tree, SMOKE)
    item = splits.test[1]
    assert item["image"].shape == (3, 32, 32) and item["label"] == 1
    assert item["boxes"].tolist() == [[4.0, 5.0, 20.0, 25.0]]
    assert len(splits.train) == 4 and "boxes" not in splits.train[0]


def test_line_with_a_missing_field(tree):
    path = meta(tree) / "class_labels.txt"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].split(",")[0]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MetadataError, match=r"class_labels\.txt:2: expected `<path>,<int class id>`"):
        read_split(meta(tree), "box")


def test_image_id_absent_from_class_labels(tree):
    path = meta(tree) / "class_labels.txt"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[1:]))
    with pytest.raises(MetadataError, match=r"class_labels\.txt: image id 'test/c0/000\.png' .* has no class label"):
        read_split(meta(tree), "box")


def test_box_outside_the_image(tree):
    path = meta(tree) / "localization.txt"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 2)[0] + ",40,25"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MetadataError, match=r"localization\.txt:3: box \(4,5,40,25\) lies outside the 32x32 image"):
        read_split(meta(tree), "box")


def test_unreadable_image_names_the_file(tree):
    (tree / "tiny-boxes" / "test" / "c1" / "001.png").write_bytes(b"not a png")
    splits = TinyBoxes().splits(tree, SMOKE)
    with pytest.raises(MetadataError, match=r"test/c1/001\.png: image cannot be read"):
        splits.test[1]


def test_missing_image_names_the_file(tree):
    (tree / "tiny-boxes" / "test" / "c0" / "002.png").unlink()
    with pytest.raises(MetadataError, match=r"test/c0/002\.png: image file is missing"):
        TinyBoxes().splits(tree, SMOKE).test[2]


def test_image_id_escaping_the_root(tree):
    path = meta(tree) / "image_ids.txt"
    path.write_text(path.read_text() + "../../etc/passwd\n")
    with pytest.raises(MetadataError, match=r"image_ids\.txt:5: path '\.\./\.\./etc/passwd' must be relative"):
        read_split(meta(tree), "box")


def test_empty_split(tree):
    (meta(tree, "val") / "image_ids.txt").write_text("\n")
    with pytest.raises(MetadataError, match=r"val/image_ids\.txt: the split is empty"):
        TinyBoxes().splits(tree, SMOKE)


def test_missing_metadata_file(tree):
    (meta(tree) / "localization.txt").unlink()
    with pytest.raises(MetadataError, match=r"localization\.txt: metadata file is missing"):
        read_split(meta(tree), "box")


def test_class_id_out_of_range(tree):
    path = meta(tree) / "class_labels.txt"
    path.write_text(path.read_text().replace(",1\n", ",7\n", 1))
    with pytest.raises(MetadataError, match=r"class id 7 .* not below the 2 classes"):
        TinyBoxes().splits(tree, SMOKE)


def test_mask_lines_and_empty_mask_field(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "image_ids.txt").write_text("a.png\nb.png\n")
    (d / "class_labels.txt").write_text("a.png,1\nb.png,0\n")
    (d / "image_sizes.txt").write_text("")
    (d / "localization.txt").write_text("a.png,a_m1.png,a_ign.png\na.png,a_m2.png,\nb.png,,\n")
    a, b = read_split(d, "mask")
    assert a.masks == ["a_m1.png", "a_m2.png"] and a.ignore == "a_ign.png"
    assert b.masks == [] and b.ignore is None
    (d / "localization.txt").write_text("a.png,a_m1.png,a_ign.png\na.png,a_m2.png,x.png\nb.png,,\n")
    with pytest.raises(MetadataError, match=r"localization\.txt:2: a second ignore mask"):
        read_split(d, "mask")


def test_negative_class_datasets_localize_the_roi_class():
    from bench.registry import get_dataset

    labels = torch.tensor([0, 1, 1, 0])
    tissue = get_dataset("synth-tissue")()
    assert tissue.negative_class == 0
    assert tissue.localization_classes(labels).tolist() == [1, 1, 1, 1]
    assert TinyBoxes().localization_classes(labels).tolist() == [0, 1, 1, 0]  # GT-known otherwise


def test_decoded_files_are_shared_across_splits_and_read_again_when_rewritten(tree, monkeypatch):
    from PIL import Image

    import bench.dataset.metadata as md

    decoded = []
    real = md.load_image
    monkeypatch.setattr(md, "load_image", lambda path, root=None: decoded.append(Path(path).name) or real(path, root))
    monkeypatch.setattr(md, "DECODED", md.DecodedFiles(md.PIXEL_CACHE_BYTES))
    first = TinyBoxes().splits(tree, SMOKE).test[1]["image"]
    count = len(decoded)
    again = TinyBoxes().splits(tree, SMOKE).test[1]["image"]  # another cell's splits in the same process
    assert len(decoded) == count and torch.equal(first, again)
    name = decoded[-1]
    path = next(tree.rglob(name))
    with Image.open(path) as img:
        inverted = Image.eval(img.convert("RGB"), lambda v: 255 - v)
    inverted.save(path.with_name("new" + path.suffix))
    path.with_name("new" + path.suffix).replace(path)  # a rewritten file: decoded again
    changed = TinyBoxes().splits(tree, SMOKE).test[1]["image"]
    assert decoded[-1] == name and len(decoded) == count + 1
    assert torch.allclose(changed, 1 - first, atol=1 / 255 + 1e-6)


def test_decoded_files_keep_at_most_their_limit_and_are_read_only(tmp_path):
    import numpy as np

    from bench.dataset.metadata import DecodedFiles

    cache = DecodedFiles(limit=250)
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.bin")
        files[-1].write_bytes(b"x")
    for f in files:
        value = cache.get(f, tmp_path, "image", ("t",), lambda: np.zeros(100, dtype=np.uint8))
        assert not value.flags.writeable
    assert cache.nbytes == 200 and len(cache._items) == 2  # the least recently used went first
    calls = []
    cache.get(files[0], tmp_path, "image", ("t",), lambda: calls.append(1) or np.zeros(100, dtype=np.uint8))
    assert calls == [1]
    with pytest.raises(MetadataError, match="outside the image root"):
        cache.get(files[0], tmp_path / "elsewhere", "image", ("t",), lambda: np.zeros(1, dtype=np.uint8))
