import pytest
import torch

from bench._ext import has_op
from bench.ops.temporal_max_pool import temporal_max_pool, temporal_max_pool_reference

needs_op = pytest.mark.skipif(not has_op("temporal_max_pool"), reason="bench._C not built")

CONFIGS = [
    (n, d, rw, nm)
    for n in (0, 1, 2)
    for d in ("before", "after", "both")
    for rw in (None, 3.0)
    for nm in (False, True)
]


def _inputs(B=2, T=6, H=5, W=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    cams = torch.rand(B, T, H, W, generator=g, dtype=dtype)
    # shot boundaries inside the clips, and a shot id that comes back after another shot
    shots = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 7, 7, 5, 5]])[:B, :T]
    return cams, shots


@needs_op
@pytest.mark.parametrize("n,direction,h,normalize", CONFIGS)
def test_matches_reference(n, direction, h, normalize):
    cams, shots = _inputs(dtype=torch.float32)
    out, win = temporal_max_pool(cams, shots, n, direction, h, normalize)
    ref, rwin = temporal_max_pool_reference(cams, shots, n, direction, h, normalize)
    torch.testing.assert_close(out, ref)
    assert win.dtype == torch.int32
    assert torch.equal(win, rwin)


def test_reference_window_semantics():
    cams = torch.zeros(1, 5, 1, 1)
    cams[0, :, 0, 0] = torch.tensor([5.0, 1.0, 2.0, 9.0, 3.0])
    shots = torch.tensor([[0, 0, 1, 1, 0]])  # frame 4 is a new shot (same id as 0..1)
    out, win = temporal_max_pool_reference(cams, shots, n=4, direction="before")
    assert out.flatten().tolist() == [5.0, 5.0, 2.0, 9.0, 3.0]
    assert win.flatten().tolist() == [0, 0, 2, 3, 4]
    out, _ = temporal_max_pool_reference(cams, shots, n=1, direction="after")
    assert out.flatten().tolist() == [5.0, 1.0, 9.0, 9.0, 3.0]
    out, _ = temporal_max_pool_reference(cams, shots, n=1, direction="both")
    assert out.flatten().tolist() == [5.0, 5.0, 9.0, 9.0, 3.0]


@needs_op
def test_single_frame_is_identity():
    cams, _ = _inputs(B=2, T=1)
    out, win = temporal_max_pool(cams, None, 3, "both")
    assert torch.equal(out, cams) and bool((win == 0).all())


@needs_op
def test_all_equal_maps():
    cams = torch.full((2, 4, 3, 3), 0.5, dtype=torch.float64)
    out, win = temporal_max_pool(cams, None, 2, "both")
    assert torch.equal(out, cams)
    # earliest frame of the window wins ties
    assert win[0, :, 0, 0].tolist() == [0, 0, 0, 1]
    out, _ = temporal_max_pool(cams.requires_grad_(), None, 2, "both", 2.0, True)
    assert bool((out == 0).all())
    out.sum().backward()
    assert bool((cams.grad == 0).all())


@needs_op
@pytest.mark.parametrize("n,direction,h,normalize", [c for c in CONFIGS if c[0] != 0])
def test_gradcheck(n, direction, h, normalize):
    cams, shots = _inputs(B=2, T=6, H=3, W=3)
    cams.requires_grad_()
    fn = lambda c: temporal_max_pool(c, shots, n, direction, h, normalize)[0]
    assert torch.autograd.gradcheck(fn, (cams,), eps=1e-6, atol=1e-5)


@needs_op
def test_gradient_matches_reference():
    cams, shots = _inputs(T=6, H=6, W=7)
    a = cams.clone().requires_grad_()
    b = cams.clone().requires_grad_()
    g = torch.randn(cams.shape, dtype=cams.dtype)
    temporal_max_pool(a, shots, 2, "both", 2.0, True)[0].backward(g)
    temporal_max_pool_reference(b, shots, 2, "both", 2.0, True)[0].backward(g)
    torch.testing.assert_close(a.grad, b.grad)


@needs_op
@pytest.mark.parametrize("normalize", [False, True])
def test_opcheck(normalize):
    cams, shots = _inputs(H=3, W=3)
    cams.requires_grad_()
    torch.library.opcheck(torch.ops.wsolbench.temporal_max_pool.default, (cams, shots, 1, 0, True, 2.0, normalize))


@needs_op
def test_bad_inputs():
    cams, shots = _inputs()
    with pytest.raises(RuntimeError, match=r"cams must be \[B, T, H, W\]"):
        temporal_max_pool(cams[0], shots)
    with pytest.raises(RuntimeError, match="cams must be float32 or float64"):
        temporal_max_pool(cams.to(torch.float16), shots)
    with pytest.raises(RuntimeError, match="shot_ids must be int64"):
        temporal_max_pool(cams, shots.to(torch.int32))
    with pytest.raises(RuntimeError, match=r"shot_ids must be \[B, T\]"):
        temporal_max_pool(cams, shots[:, :3])
    with pytest.raises(RuntimeError, match="window n must be >= 0"):
        temporal_max_pool(cams, shots, n=-1)
    with pytest.raises(ValueError, match="direction must be one of"):
        temporal_max_pool(cams, shots, direction="sideways")


@pytest.mark.cuda
@pytest.mark.parametrize("n,direction,h,normalize", CONFIGS[::3])
def test_cuda_matches_cpu(n, direction, h, normalize):
    cams, shots = _inputs(B=3, T=6, H=33, W=35, dtype=torch.float32)
    shots = torch.cat([shots, shots[:1]])
    a = cams.clone().requires_grad_()
    b = cams.cuda().requires_grad_()
    out, win = temporal_max_pool(a, shots, n, direction, h, normalize)
    outc, winc = temporal_max_pool(b, shots.cuda(), n, direction, h, normalize)
    torch.testing.assert_close(outc.cpu(), out, rtol=1e-5, atol=1e-6)
    assert torch.equal(winc.cpu(), win)
    g = torch.randn(cams.shape)
    out.backward(g)
    outc.backward(g.cuda())
    torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_cuda_gradcheck_and_opcheck():
    cams, shots = _inputs(H=4, W=4)
    cams = cams.cuda().requires_grad_()
    shots = shots.cuda()
    fn = lambda c: temporal_max_pool(c, shots, 1, "both", 2.0, True)[0]
    assert torch.autograd.gradcheck(fn, (cams,), eps=1e-6, atol=1e-5)
    torch.library.opcheck(torch.ops.wsolbench.temporal_max_pool.default, (cams, shots, 1, 2, True, 2.0, True))


@needs_op
def test_whole_clip_low_res():
    g = torch.Generator().manual_seed(4)
    cams = torch.rand(1, 40, 7, 7, generator=g)
    shots = torch.repeat_interleave(torch.tensor([3, 1, 4, 1, 5]), torch.tensor([9, 1, 12, 8, 10]))[None]
    for direction in ("before", "after", "both"):
        out, win = temporal_max_pool(cams, shots, 3, direction, 2.0, True)
        ref, rwin = temporal_max_pool_reference(cams, shots, 3, direction, 2.0, True)
        torch.testing.assert_close(out, ref)
        assert torch.equal(win, rwin)
        # the winner always shares the frame's shot and stays within n frames
        t = torch.arange(40)[None, :, None, None]
        assert bool(((win - t).abs() <= 3).all())
        assert torch.equal(shots[0][win.long()], shots[0][t.expand_as(win)])


def test_fallback_without_extension(monkeypatch):
    import bench.ops.temporal_max_pool as mod

    cams, shots = _inputs()
    expected = temporal_max_pool_reference(cams, shots, 1, "both", 2.0, True)
    monkeypatch.setattr(mod, "has_op", lambda name: False)
    out, win = mod.temporal_max_pool(cams, shots, 1, "both", 2.0, True)
    torch.testing.assert_close(out, expected[0])
    assert torch.equal(win, expected[1])
