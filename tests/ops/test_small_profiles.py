import pytest
import torch

from bench.profiling import ProfileTable, load_profiles


@pytest.mark.parametrize("name", ["temporal_max_pool", "pixel", "seed"])
def test_small_profile_runs(name):
    tables = load_profiles()[name](torch.device("cpu"), "small")
    assert tables and all(isinstance(t, ProfileTable) and t.rows for t in tables)
