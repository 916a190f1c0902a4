"""pytest-benchmark timings of the evaluators (small sizes; run with --benchmark-enable)."""
import torch

from bench.metrics import BoxEvaluator, MaskEvaluator
from bench.profiling.metrics import _data

N = 32


def test_bench_box_evaluator(benchmark):
    cams, _, boxes = _data(N)

    def run():
        ev = BoxEvaluator()
        ev.accumulate(cams, boxes)
        return ev.compute()

    assert 0 <= benchmark(run)["MaxBoxAccV2"] <= 100


def test_bench_mask_evaluator(benchmark):
    cams, masks, _ = _data(N)

    def run():
        ev = MaskEvaluator()
        ev.accumulate(cams, masks)
        return ev.compute()

    assert 0 <= benchmark(run)["PxAP"] <= 100


def test_metrics_profile_small():
    from bench.profiling import load_profiles

    tables = load_profiles()["metrics"](torch.device("cpu"), "small")
    assert tables and len(tables[0].rows) == 3
