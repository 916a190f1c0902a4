import torch

from bench.profiling import load_profiles


def test_crf_profile_small_runs():
    tables = load_profiles()["crf"](torch.device("cpu"), "small")
    assert tables and tables[0].rows
    row = tables[0].rows[0]
    assert {"K", "threads", "op ms", "per-class loop ms", "floor MB"} <= set(row)
