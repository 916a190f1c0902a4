import torch

from bench.profiling import load_profiles


def test_crf_profile_small_runs():
    tables = load_profiles()["crf"](torch.device("cpu"), "small")
    assert tables and tables[0].rows
    row = tables[0].rows[0]
    assert {"K", "threads", "op ms", "per-class loop ms", "floor MB"} <= set(row)
    (energy,) = [t for t in tables if "one lattice or two" in t.title]
    assert [r["crf_loss fwd+bwd"] for r in energy.rows] == ["one symmetric filtering (crf_loss)",
                                                            "filter + adjoint in backward"]
    assert energy.rows[0]["ratio to crf_loss"] == 1.0 and all(r["ms"] > 0 for r in energy.rows)
