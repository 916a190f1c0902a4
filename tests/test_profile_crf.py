import torch

from bench.profiling import load_profiles
from bench.profiling.crf import PHASES


def test_crf_profile_small_runs():
    tables = load_profiles()["crf"](torch.device("cpu"), "small")
    assert tables and tables[0].rows
    row = tables[0].rows[0]
    assert {"K", "threads", "op ms", "per-class loop ms", "floor MB"} <= set(row)
    (energy,) = [t for t in tables if "one lattice or two" in t.title]
    assert [r["crf_loss fwd+bwd"] for r in energy.rows] == ["one symmetric filtering (crf_loss)",
                                                            "filter + adjoint in backward"]
    assert energy.rows[0]["ratio to crf_loss"] == 1.0 and all(r["ms"] > 0 for r in energy.rows)

    (phases,) = [t for t in tables if t.title.startswith("lattice_filter CPU phases")]
    assert {r["threads"] for r in phases.rows} == {1, 2}
    for r in phases.rows:
        times = [r[f"{p} ms"] for p in PHASES]
        assert all(t >= 0 for t in times) and r["wall ms"] > 0
        assert r["embed ms"] > 0 and r["slice ms"] > 0

    (side,) = [t for t in tables if "vs git" in t.title]
    if not side.rows:  # no compiler or no git here: the table says why instead of crashing
        assert side.notes and "not compared" in side.notes[0]
        return
    cases = {r["case"] for r in side.rows}
    assert any("K=2" in c for c in cases) and any("K=21" in c for c in cases)
    assert any(c.startswith("forward 1x") for c in cases) and any(c.startswith("crf_loss") for c in cases)
    assert {r["threads"] for r in side.rows} == {1, 2}
    for r in side.rows:
        assert r["new ms (best)"] > 0 and r["old ms (best)"] > 0
        assert r["old / new (best)"] > 0 and r["old / new (median)"] > 0
        if r["max rel diff"] != "-":  # the two kernels compute the same filter
            assert float(r["max rel diff"]) < 1e-4
