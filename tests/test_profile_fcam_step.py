import torch

from bench.profiling import load_profiles


def test_fcam_step_profile_small_compares_crf_on_and_off():
    (table,) = load_profiles()["fcam-step"](torch.device("cpu"), "small")
    steps = [row["step"] for row in table.rows]
    assert steps[0] == "CRF off" and all(s.startswith("CRF on") for s in steps[1:])
    assert table.rows[0]["ratio to CRF off"] == 1.0
    assert all(row["ms"] > 0 for row in table.rows)
    # the CRF adds no convolution or matrix product: the counted work is the same in every variant
    assert table.rows[0]["GFLOP"] > 0 and len({row["GFLOP"] for row in table.rows}) == 1
