import pytest
import torch

CUDA_SKIP_REASON = "needs a CUDA device: none is visible (torch.cuda.is_available() is False)"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=CUDA_SKIP_REASON))
