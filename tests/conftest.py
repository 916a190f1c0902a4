from pathlib import Path

import pytest
import torch

CUDA_SKIP_REASON = "needs a CUDA device: none is visible (torch.cuda.is_available() is False)"

# Small versions of the embedded datasets for the tests (the smoke budget subsets them further).
SMALL_DATASETS = {
    "synth-objects": {"n_train": "12", "n_val": "2", "n_test": "4", "image_size": "64"},
    "synth-tissue": {"n_train": "24", "n_val": "2", "n_test": "8", "image_size": "64"},
    "synth-tissue-shifted": {"n_train": "24", "n_val": "2", "n_test": "8", "image_size": "64"},
    "synth-video": {"n_train": "4", "n_val": "1", "n_test": "2", "image_size": "32", "frames_per_shot": "4"},
}


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=CUDA_SKIP_REASON))


@pytest.fixture(scope="session")
def shared_dirs(tmp_path_factory) -> dict[str, Path]:
    """One data root and one stage-1 cache for the whole session (generated once)."""
    base = tmp_path_factory.mktemp("wsolbench")
    return {"data": base / "data", "cache": base / "cache"}


def set_flags(datasets=SMALL_DATASETS) -> list[str]:
    return [f"{name}.{k}={v}" for name, kv in datasets.items() for k, v in kv.items()]
