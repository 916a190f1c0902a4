"""pytest-benchmark timings of the lattice filter and CRF losses (small sizes). Run with
`pytest tests/bench_crf.py --benchmark-enable`; disabled (run once, untimed) otherwise."""
import pytest
import torch

from bench.losses.crf import crf_features, crf_loss, multiframe_color_crf_loss
from bench.ops.lattice_filter import lattice_filter_op
from bench.profiling.crf import natural_like_images

SIDE = 96


@pytest.fixture(scope="module")
def feat():
    return crf_features(natural_like_images(1, SIDE, SIDE, "cpu"), 15.0, 100.0, torch.float32)


@pytest.mark.parametrize("K", [2, 21])
def test_lattice_filter_op(benchmark, feat, K):
    values = torch.rand(1, K, SIDE * SIDE)
    benchmark(lambda: lattice_filter_op(feat, values))


@pytest.mark.parametrize("K", [2, 21])
def test_lattice_filter_per_class_loop(benchmark, feat, K):
    values = torch.rand(1, K, SIDE * SIDE)
    benchmark(lambda: [lattice_filter_op(feat, values[:, k : k + 1].contiguous()) for k in range(K)])


def test_lattice_filter_symmetric(benchmark, feat):
    # the CRF losses' call: W + W^T from one lattice
    values = torch.rand(1, 2, SIDE * SIDE)
    benchmark(lambda: lattice_filter_op(feat, values, symmetric=True))


@pytest.mark.parametrize("threads", [1, 2])
def test_lattice_filter_one_image_threads(benchmark, threads):
    # one image: the threads share its lattice (2 threads about halve the time on an idle machine)
    f = crf_features(natural_like_images(1, 2 * SIDE, 2 * SIDE, "cpu"), 15.0, 100.0, torch.float32)
    values = torch.rand(1, 2, 4 * SIDE * SIDE)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        benchmark(lambda: lattice_filter_op(f, values))
    finally:
        torch.set_num_threads(old)


def test_crf_loss_forward_backward(benchmark):
    images = natural_like_images(4, 64, 64, "cpu")
    probs = torch.softmax(torch.randn(4, 2, 64, 64), 1).requires_grad_(True)
    benchmark(lambda: crf_loss(images, probs).backward())


def test_multiframe_color_crf(benchmark):
    frames = natural_like_images(8, 32, 32, "cpu").view(2, 4, 3, 32, 32)
    probs = torch.softmax(torch.randn(2, 4, 2, 32, 32), 2).requires_grad_(True)
    benchmark(lambda: multiframe_color_crf_loss(frames, probs, lengths=[4, 3]).backward())
