import dataclasses

import torch

from bench.config import get_budget
from bench.profiling import load_profiles


def test_train_profile_small_compares_harness_with_bare_loop():
    (table,) = load_profiles()["train"](torch.device("cpu"), "small")
    loops = [row["loop"] for row in table.rows]
    assert loops[0].startswith("bare") and loops[1].startswith("harness")
    assert all(row["images/s"] > 0 for row in table.rows)
    ratio = table.rows[1]["images/s"] / table.rows[0]["images/s"]  # from rounded rates: close, not equal
    assert abs(table.rows[1]["ratio"] - ratio) < 0.01 * ratio


def test_paper_budget_crops_training_images_only():
    from bench.registry import get_dataset

    budget = dataclasses.replace(get_budget("paper"), input_size=24, crop_from=32, num_workers=0)
    cls = get_dataset("synth-objects")
    ds = cls(dataclasses.replace(cls.Config(), image_size=40, n_train=2, n_val=1, n_test=1))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        ds.prepare(Path(tmp))
        splits = ds.splits(Path(tmp), budget)
        train_item, test_item = splits.train[0], splits.test[0]
        assert train_item["image"].shape == (3, 24, 24) and test_item["image"].shape == (3, 24, 24)
        assert splits.train._load_pixels(0)[0].shape == (32, 32, 3)  # stored at crop_from, cropped per item
        assert splits.test._load_pixels(0)[0].shape == (24, 24, 3)  # evaluation: resized, never cropped
        crops = {tuple(splits.train[0]["image"][0, 0, :3].tolist()) for _ in range(12)}
        assert len(crops) > 1  # the crop moves between draws
