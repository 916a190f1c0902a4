"""The generic test every registered method and dataset must pass."""
import json
import math

import pytest

from bench.registry import all_datasets, all_methods
from bench.runner import result_path
from tests.harness import SMOKE, run_small_cell, small_dataset

SYNTHETIC = [n for n, d in all_datasets().items() if d.synthetic and d.in_grid]  # image and video
PAIRS = [(m, d) for d in SYNTHETIC for m, mcls in all_methods().items() if mcls.skip(small_dataset(d)) is None]


@pytest.mark.parametrize("method,dataset", PAIRS, ids=[f"{m}-{d}" for m, d in PAIRS])
def test_method_runs_under_the_protocol(method, dataset, shared_dirs, tmp_path):
    record = run_small_cell(method, dataset, 0, shared_dirs, tmp_path)
    assert record["status"] == "ok", record.get("traceback")
    on_disk = json.loads(result_path(tmp_path, dataset, method, 0).read_text())
    assert on_disk["config_hash"] == record["config_hash"]
    for key in ("config", "seed", "budget", "timings", "code_version", "torch", "device", "extension"):
        assert key in on_disk, key
    primary = on_disk["primary_metric"]
    value = on_disk["metrics"][primary]
    assert math.isfinite(value) and 0.0 <= value <= 100.0
    assert on_disk["code_version"]["method_file_sha256"]


@pytest.mark.parametrize("name", sorted(all_datasets()))
def test_dataset_plugin_declares_itself(name, shared_dirs):
    ds = small_dataset(name)
    assert ds.task in ("image", "video") and ds.annotation in ("box", "mask")
    assert ds.primary_metric in ("MaxBoxAccV2", "MaxBoxAcc", "PxAP", "CorLoc")
    if ds.synthetic:
        ds.prepare(shared_dirs["data"])
        splits = ds.splits(shared_dirs["data"], SMOKE)
        assert min(len(splits.train), len(splits.val), len(splits.test)) > 0
        item = splits.test[0]
        assert item["image"].dtype.is_floating_point and 0 <= item["image"].min() <= item["image"].max() <= 1
        assert ("boxes" in item) == (ds.annotation == "box")
        if "mask" in item:
            assert set(item["mask"].unique().tolist()) <= {0, 1, 255}
