"""pytest-benchmark timings of the temporal max pooling, pixel classifier and seed ops at small
sizes (run: pytest tests/bench_video_pixel_seed_ops.py --benchmark-enable)."""
import pytest
import torch

from bench.ops.pixel_classifier import pixel_classifier_probs, pixel_seed_ce, pixel_seed_ce_dense
from bench.ops.seed import SeedConfig, make_seeds
from bench.ops.temporal_max_pool import temporal_max_pool, temporal_max_pool_reference

pytest.importorskip("pytest_benchmark")


@pytest.fixture(scope="module")
def cams_video():
    g = torch.Generator().manual_seed(0)
    cams = torch.rand(4, 8, 56, 56, generator=g)
    shots = (torch.arange(8) >= 4).long().expand(4, 8).contiguous()
    return cams, shots


@pytest.fixture(scope="module")
def pixel_inputs():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(4, 256, 14, 14, generator=g).requires_grad_()
    w = (torch.randn(2, 256, generator=g) / 16).requires_grad_()
    b = torch.zeros(2).requires_grad_()
    labels = torch.full((4, 14, 14), 255, dtype=torch.int64)
    labels[:, 3, 4] = 1
    labels[:, 10, 11] = 0
    return f, w, b, labels


def test_tmp_op(benchmark, cams_video):
    cams, shots = cams_video
    benchmark(temporal_max_pool, cams, shots, 1, "before", 1.0, True)


def test_tmp_reference(benchmark, cams_video):
    cams, shots = cams_video
    benchmark(temporal_max_pool_reference, cams, shots, 1, "before", 1.0, True)


def _step(fn, f, w, b, labels):
    fn(f, w, b, labels).backward()
    f.grad = w.grad = b.grad = None


def test_pixel_seed_ce_op(benchmark, pixel_inputs):
    benchmark(_step, pixel_seed_ce, *pixel_inputs)


def test_pixel_seed_ce_dense(benchmark, pixel_inputs):
    benchmark(_step, pixel_seed_ce_dense, *pixel_inputs)


def test_pixel_probs_op(benchmark, pixel_inputs):
    f, w, b, _ = pixel_inputs
    with torch.no_grad():
        benchmark(pixel_classifier_probs, f.detach(), w.detach(), b.detach(), 1)


@pytest.mark.parametrize("mode", ["uniform", "top", "proportional"])
def test_seed_batched(benchmark, mode):
    cams = torch.rand(8, 64, 64, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    benchmark(make_seeds, cams, SeedConfig(n_fg=2, n_bg=2, fg_mode=mode, erode_size=3), g)
