"""The measuring helpers of bench.profiling: FLOP counts and per-kernel time breakdowns."""
import torch


def test_count_gflop_counts_a_matrix_product():
    from bench.profiling import count_gflop

    a, b = torch.rand(300, 400), torch.rand(400, 500)
    assert count_gflop(lambda: a @ b) == 2 * 300 * 400 * 500 / 1e9


def test_time_breakdown_names_the_ops_of_a_call():
    from bench.profiling import time_breakdown

    a = torch.rand(200, 200)
    rows = time_breakdown(lambda: (a @ a).sum(), torch.device("cpu"), iterations=3)
    names = [row["op"] for row in rows]
    assert any("mm" in name for name in names)
    assert all(row["us per run"] > 0 for row in rows) and sum(row["share %"] for row in rows) <= 100.5
