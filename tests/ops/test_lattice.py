"""wsolbench::lattice_filter: op vs pure-torch reference, adjoint, gradcheck, opcheck, errors."""
import pytest
import torch

from bench import _ext
from bench.ops.lattice_filter import lattice_filter, lattice_filter_op, lattice_filter_reference

needs_op = pytest.mark.skipif(not _ext.has_op("lattice_filter"), reason="bench._C not built")


def _inputs(B, d, K, N, dtype, seed=0, spread=1.5, valid_frac=None, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    f = (torch.randn(B, d, N, generator=g, dtype=torch.float64) * spread).to(dtype)
    v = torch.rand(B, K, N, generator=g, dtype=torch.float64).to(dtype)
    valid = None if valid_frac is None else torch.rand(B, N, generator=g) < valid_frac
    return f.to(device), v.to(device), (None if valid is None else valid.to(device))


def _close(a, b, rtol):
    scale = b.abs().max().clamp_min(1e-30)
    assert ((a - b).abs().max() / scale).item() <= rtol, ((a - b).abs().max() / scale).item()


@needs_op
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [1, 3, 5, 8])
@pytest.mark.parametrize("K", [1, 2, 5])
def test_op_matches_reference(dtype, d, K):
    f, v, valid = _inputs(2, d, K, 120, dtype, seed=d * 10 + K, valid_frac=0.8)
    for normalize in (False, True):
        for transpose in (False, True):
            out = torch.ops.wsolbench.lattice_filter(f, v, valid, normalize, transpose)
            ref = lattice_filter_reference(f, v, valid, normalize, transpose)
            assert out.dtype == dtype and out.shape == v.shape
            _close(out, ref, 1e-5)
            if valid is not None:
                assert (out[~valid.unsqueeze(1).expand_as(out)] == 0).all()


@needs_op
def test_natural_like_image_matches_reference():
    # smooth image: few lattice points per pixel, large CSR buckets (the realistic regime)
    torch.manual_seed(0)
    H = W = 24
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4) * 255, size=(H, W), mode="bilinear")
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    f = torch.cat([torch.stack([xs, ys])[None] / 10, img / 15], 1)
    v = torch.rand(1, 3, H, W)
    _close(lattice_filter(f, v), lattice_filter_reference(f.flatten(2), v.flatten(2)).view_as(v), 1e-5)


def test_dense_gaussian_sanity():
    """The lattice approximates sum_j exp(-|f_i - f_j|^2 / 2) v_j up to a constant factor.

    The permutohedral approximation is coarse and degrades with d (Adams et al. 2010, §5): its
    effective kernel is a piecewise-linear, slightly anisotropic stand-in for the Gaussian. On
    random points with spread 1.5 std we measure correlation >= 0.97 and a relative error after
    the best scalar fit of 0.01 (d=1), 0.02 (d=3) and 0.2 (d=5); the bounds leave margin."""
    torch.manual_seed(0)
    for d, bound in [(1, 0.05), (3, 0.1), (5, 0.35)]:
        f, v, _ = _inputs(1, d, 1, 300, torch.float64, seed=d)
        G = torch.exp(-torch.cdist(f[0].t(), f[0].t()) ** 2 / 2)
        exact = (G @ v[0].t()).t()
        approx = lattice_filter_op(f, v)[0]
        corr = torch.corrcoef(torch.stack([exact[0], approx[0]]))[0, 1]
        s = (exact * approx).sum() / (approx * approx).sum()
        rel = (s * approx - exact).norm() / exact.norm()
        assert corr > 0.95, (d, corr)
        assert rel < bound, (d, rel)
        assert 0.5 < s < 4.0  # the constant factor is of order one


@pytest.mark.parametrize("normalize", [False, True])
def test_transpose_is_exact_adjoint(normalize):
    f, x, _ = _inputs(2, 5, 3, 150, torch.float64, seed=1)
    y = torch.rand_like(x)
    valid = torch.rand(2, 150, generator=torch.Generator().manual_seed(3)) < 0.9
    wx = lattice_filter_op(f, x, valid, normalize, False)
    wty = lattice_filter_op(f, y, valid, normalize, True)
    lhs, rhs = (wx * y).sum(), (x * wty).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=0)
    # and W itself is not symmetric: the transpose op is needed for an exact gradient
    wy = lattice_filter_op(f, y, valid, normalize, False)
    assert not torch.allclose(lhs, (x * wy).sum(), rtol=1e-6)


@needs_op
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [3, 5])
def test_symmetric_is_w_plus_its_transpose(dtype, d):
    f, v, valid = _inputs(2, d, 3, 150, dtype, seed=d, valid_frac=0.8)
    both = torch.ops.wsolbench.lattice_filter(f, v, valid, False, False, True)
    apart = lattice_filter_op(f, v, valid) + lattice_filter_op(f, v, valid, transpose=True)
    _close(both, apart, 1e-6 if dtype == torch.float32 else 1e-12)
    _close(both, lattice_filter_reference(f, v, valid, symmetric=True), 1e-5)
    assert not torch.equal(lattice_filter_op(f, v, valid), lattice_filter_op(f, v, valid, transpose=True))
    # W + W^T is self-adjoint: <u, (W + W^T) v> = <(W + W^T) u, v>
    u = torch.rand_like(v)
    lhs = (u * both).sum()
    rhs = (torch.ops.wsolbench.lattice_filter(f, u, valid, False, False, True) * v).sum()
    assert abs(lhs - rhs).item() <= 1e-5 * abs(lhs).item()
    with pytest.raises(RuntimeError, match="cannot be combined with normalize"):
        torch.ops.wsolbench.lattice_filter(f, v, valid, True, False, True)


@needs_op
def test_symmetric_gradcheck_and_opcheck():
    f, v, valid = _inputs(2, 3, 2, 20, torch.float64, seed=6, valid_frac=0.8)
    v.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: lattice_filter_op(f, x, valid, symmetric=True), (v,), eps=1e-6,
                                    atol=1e-8)
    torch.library.opcheck(torch.ops.wsolbench.lattice_filter.default, (f.float(), v.detach().float().requires_grad_(),
                                                                       valid, False, False, True))


@needs_op
@pytest.mark.parametrize("normalize", [False, True])
def test_gradcheck(normalize):
    f, v, valid = _inputs(2, 3, 2, 20, torch.float64, seed=5, valid_frac=0.8)
    v.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: torch.ops.wsolbench.lattice_filter(f, x, valid, normalize, False), (v,), eps=1e-6, atol=1e-8
    )
    assert torch.autograd.gradcheck(lambda x: lattice_filter(f, x, None, normalize, True), (v,), eps=1e-6, atol=1e-8)
    assert torch.autograd.gradgradcheck(lambda x: lattice_filter(f, x, None, normalize), (v,), eps=1e-6, atol=1e-8)


@needs_op
def test_features_get_no_gradient():
    f, v, _ = _inputs(1, 3, 2, 30, torch.float64)
    f.requires_grad_(True)
    v.requires_grad_(True)
    lattice_filter(f, v).sum().backward()
    assert f.grad is None and v.grad is not None


@needs_op
@pytest.mark.parametrize("with_valid", [False, True])
def test_opcheck(with_valid):
    f, v, valid = _inputs(2, 3, 2, 40, torch.float32, seed=7, valid_frac=0.7 if with_valid else None)
    v.requires_grad_(True)
    for normalize, transpose in [(False, False), (True, True)]:
        torch.library.opcheck(torch.ops.wsolbench.lattice_filter.default, (f, v, valid, normalize, transpose))


def test_4d_noncontiguous_and_channels_last():
    torch.manual_seed(0)
    f = torch.randn(2, 5, 6, 7)
    v = torch.rand(2, 3, 6, 7)
    ref = lattice_filter(f, v)
    out_cl = lattice_filter(f.to(memory_format=torch.channels_last), v.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, ref, rtol=1e-6, atol=1e-7)
    # non-contiguous: transposed storage and strided slices
    fn = torch.randn(2, 5, 7, 6).transpose(2, 3)
    vn = torch.rand(2, 6, 6, 7)[:, ::2]
    assert not fn.is_contiguous() and not vn.is_contiguous()
    torch.testing.assert_close(lattice_filter(fn, vn), lattice_filter(fn.contiguous(), vn.contiguous()))
    flat = lattice_filter_op(f.flatten(2), v.flatten(2))
    torch.testing.assert_close(flat.view_as(ref), ref)


@needs_op
def test_bad_inputs_raise():
    op = torch.ops.wsolbench.lattice_filter
    f = torch.randn(1, 3, 10)
    v = torch.rand(1, 2, 10)
    with pytest.raises(RuntimeError, match="features must be \\[B, d, N\\]"):
        op(f[0], v, None, False, False)
    with pytest.raises(RuntimeError, match="values must be \\[B, K, N\\]"):
        op(f, v[0], None, False, False)
    with pytest.raises(RuntimeError, match="d = size\\(1\\) must be in \\[1, 8\\], got d = 9"):
        op(torch.randn(1, 9, 10), v, None, False, False)
    with pytest.raises(RuntimeError, match="features must be float32 or float64"):
        op(f.half(), v.half(), None, False, False)
    with pytest.raises(RuntimeError, match="values dtype .* must match features dtype"):
        op(f, v.double(), None, False, False)
    with pytest.raises(RuntimeError, match="values point count N \\(9\\)"):
        op(f, v[..., :9], None, False, False)
    with pytest.raises(RuntimeError, match="values batch size"):
        op(f, torch.rand(2, 2, 10), None, False, False)
    with pytest.raises(RuntimeError, match="valid must be \\[B, N\\]"):
        op(f, v, torch.ones(1, 9, dtype=torch.bool), False, False)
    with pytest.raises(RuntimeError, match="valid must be bool or uint8"):
        op(f, v, torch.ones(1, 10), False, False)
    with pytest.raises(RuntimeError, match="features must be finite"):
        op(torch.full((1, 3, 10), float("nan")), v, None, False, False)
    with pytest.raises(RuntimeError, match="features must be finite"):
        op(f * 1e7, v, None, False, False)
    with pytest.raises(RuntimeError, match="values .* do not match features"):
        lattice_filter(torch.randn(1, 3, 4, 4), torch.rand(1, 2, 4, 5))


def test_empty_and_all_invalid():
    f = torch.randn(2, 3, 10)
    v = torch.rand(2, 2, 10)
    out = lattice_filter_op(f, v, torch.zeros(2, 10, dtype=torch.bool))
    assert (out == 0).all()
    assert lattice_filter_op(f[..., :0], v[..., :0]).shape == (2, 2, 0)


@needs_op
@pytest.mark.parametrize("B,N", [(3, 4000), (1, 12000)])  # one image per thread / threads inside an image
def test_threads_deterministic(B, N):
    f, v, valid = _inputs(B, 5, 4, N, torch.float32, seed=11, valid_frac=0.9)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = lattice_filter_op(f, v, valid)
        torch.set_num_threads(2)
        b = lattice_filter_op(f, v, valid)
        c = lattice_filter_op(f, v, valid, True, True)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a, b)
    if N > 10000:  # the multi-threaded build gives the reference's lattice
        _close(c, lattice_filter_reference(f, v, valid, True, True), 1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("d", [3, 5])
def test_cuda_matches_cpu(normalize, transpose, d):
    f, v, valid = _inputs(2, d, 3, 500, torch.float32, seed=2, valid_frac=0.8)
    cpu = lattice_filter_op(f, v, valid, normalize, transpose)
    gpu = lattice_filter_op(f.cuda(), v.cuda(), valid.cuda(), normalize, transpose)
    _close(gpu.cpu(), cpu, 1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("d", [3, 5])
def test_cuda_symmetric_matches_cpu(d):
    f, v, valid = _inputs(2, d, 3, 500, torch.float32, seed=3, valid_frac=0.8)
    cpu = lattice_filter_op(f, v, valid, symmetric=True)
    gpu = lattice_filter_op(f.cuda(), v.cuda(), valid.cuda(), symmetric=True)
    _close(gpu.cpu(), cpu, 1e-4)


@pytest.mark.cuda
def test_cuda_gradcheck_and_opcheck():
    f, v, valid = _inputs(1, 3, 2, 30, torch.float64, seed=4, valid_frac=0.8, device="cuda")
    v.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: lattice_filter_op(f, x, valid), (v,), eps=1e-6, atol=1e-8)
    torch.library.opcheck(torch.ops.wsolbench.lattice_filter.default, (f.float(), v.detach().float().requires_grad_(), valid, False, False))


@pytest.mark.cuda
def test_cuda_device_mismatch_raises():
    f = torch.randn(1, 3, 10)
    v = torch.rand(1, 2, 10)
    with pytest.raises(RuntimeError, match="values device"):
        torch.ops.wsolbench.lattice_filter(f.cuda(), v, None, False, False)
    with pytest.raises(RuntimeError, match="valid device"):
        torch.ops.wsolbench.lattice_filter(f.cuda(), v.cuda(), torch.ones(1, 10, dtype=torch.bool), False, False)


def _natural_features(B, side, seed=0):
    from bench.losses.crf import crf_features
    from bench.profiling.crf import natural_like_images

    return crf_features(natural_like_images(B, side, side, "cpu", seed=seed), 15.0, 100.0, torch.float32)


@needs_op
@pytest.mark.parametrize("symmetric", [False, True])
def test_single_image_two_threads_equals_one_thread(symmetric):
    # a batch of 1 is split across the threads inside the image: the sums must not depend on it
    f = _natural_features(1, 96, seed=3)
    v = torch.rand(1, 3, 96 * 96, generator=torch.Generator().manual_seed(0))
    valid = torch.rand(1, 96 * 96, generator=torch.Generator().manual_seed(1)) < 0.95
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = lattice_filter_op(f, v, valid, symmetric=symmetric)
        n1 = lattice_filter_op(f, v, valid, True, True)
        torch.set_num_threads(2)
        b = lattice_filter_op(f, v, valid, symmetric=symmetric)
        n2 = lattice_filter_op(f, v, valid, True, True)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a, b) and torch.equal(n1, n2)
    assert a.abs().sum() > 0


@needs_op
def test_workspace_reuse_across_sizes():
    # the per-thread buffers are reused and the table is sized from the previous image: calls of
    # different sizes, K and d in any order give the results of a fresh call and the reference
    f_big, v_big = _natural_features(1, 80), torch.rand(1, 4, 80 * 80)
    f_small, v_small, _ = _inputs(2, 3, 2, 200, torch.float64, seed=9)
    first = lattice_filter_op(f_big, v_big)
    small = lattice_filter_op(f_small, v_small, symmetric=True)
    again = lattice_filter_op(f_big, v_big)
    wide = lattice_filter_op(f_big, torch.rand(1, 21, 80 * 80))
    assert torch.equal(first, again) and wide.shape == (1, 21, 80 * 80)
    _close(small, lattice_filter_reference(f_small, v_small, symmetric=True), 1e-10)
    _close(first, lattice_filter_reference(f_big, v_big), 1e-5)


@needs_op
@pytest.mark.parametrize("d,spread", [(5, 40.0), (8, 3.0), (3, 1e5), (8, 5e4)])
def test_large_lattices_grow_the_table(d, spread):
    # spread-out points: nearly every vertex is its own lattice point, so the table (sized from
    # the previous, tiny, image) starts far too small and grows; d=8 and very wide ranges need
    # keys of two or four words
    lattice_filter_op(*_inputs(1, d, 2, 10, torch.float64)[:2])
    f, v, valid = _inputs(1, d, 2, 3000, torch.float64, seed=d, spread=spread, valid_frac=0.9)
    out = lattice_filter_op(f, v, valid)
    _close(out, lattice_filter_reference(f, v, valid), 1e-10)
    for threads in (1, 2):
        old = torch.get_num_threads()
        try:
            torch.set_num_threads(threads)
            assert torch.equal(lattice_filter_op(f, v, valid), out)
        finally:
            torch.set_num_threads(old)


@needs_op
def test_phases_entry_point_matches_the_op():
    f, v, valid = _inputs(2, 5, 3, 500, torch.float32, seed=4, valid_frac=0.8)
    out, phases = torch.ops.wsolbench.lattice_filter_phases(f, v, valid, False, False, True)
    assert torch.equal(out, torch.ops.wsolbench.lattice_filter(f, v, valid, False, False, True))
    assert phases.shape == (8,) and phases.dtype == torch.float64 and (phases >= 0).all() and phases.sum() > 0
