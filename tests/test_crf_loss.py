"""Dense CRF loss and the multi-frame colour CRF (bench.losses.crf)."""
import pytest
import torch
import torch.nn.functional as F

from bench.losses.crf import crf_features, crf_loss, multiframe_color_crf_loss, pad_shots
from bench.ops.lattice_filter import lattice_filter_op, lattice_filter_reference


def _case(B=2, K=2, H=12, W=10, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(B, 3, 3, 3, generator=g) * 255
    images = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False).round()
    probs = torch.softmax(torch.randn(B, K, H, W, generator=g) * 2, dim=1).to(dtype)
    return images, probs


def _manual(images, probs, sigma_rgb=15.0, sigma_xy=100.0, weight=2e-9, roi=None):
    B, K, H, W = probs.shape
    feat = crf_features(images, sigma_rgb, sigma_xy, probs.dtype)
    seg = probs.reshape(B, K, H * W)
    if roi is not None:
        seg = seg * roi.reshape(B, 1, -1).to(seg.dtype)
    return -weight * (seg * lattice_filter_reference(feat, seg)).sum() / B


def test_loss_matches_reference_definition():
    images, probs = _case()
    torch.testing.assert_close(crf_loss(images, probs), _manual(images, probs), rtol=1e-5, atol=0)
    torch.testing.assert_close(
        crf_loss(images, probs, sigma_rgb=5.0, sigma_xy=3.0, weight=1.0),
        _manual(images, probs, 5.0, 3.0, 1.0), rtol=1e-5, atol=0,
    )


def test_roi_and_scale_factor():
    images, probs = _case(H=16, W=12)
    roi = torch.zeros(2, 16, 12)
    roi[:, 2:12, 3:10] = 1
    torch.testing.assert_close(crf_loss(images, probs, roi=roi), _manual(images, probs, roi=roi), rtol=1e-5, atol=0)
    si = F.interpolate(images, scale_factor=0.5, mode="nearest")
    sp = F.interpolate(probs, scale_factor=0.5, mode="bilinear", align_corners=False)
    sr = F.interpolate(roi[:, None], scale_factor=0.5, mode="nearest")[:, 0]
    torch.testing.assert_close(
        crf_loss(images, probs, sigma_xy=20.0, scale_factor=0.5, roi=roi),
        _manual(si, sp, sigma_xy=10.0, roi=sr), rtol=1e-5, atol=0,
    )


def test_gradient_is_exact_not_symmetrised():
    images, probs = _case(dtype=torch.float64)
    probs = probs.requires_grad_(True)
    loss = crf_loss(images, probs, weight=1.0)
    loss.backward()
    B, K, H, W = probs.shape
    feat = crf_features(images, 15.0, 100.0, torch.float64)
    s = probs.detach().reshape(B, K, -1)
    expected = -(lattice_filter_op(feat, s) + lattice_filter_op(feat, s, transpose=True)) / B
    torch.testing.assert_close(probs.grad.reshape(B, K, -1), expected, rtol=1e-10, atol=1e-12)
    small_images, small_probs = _case(B=1, H=5, W=4, dtype=torch.float64)
    small_probs.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: crf_loss(small_images, p, weight=1.0), (small_probs,), eps=1e-6, atol=1e-6)


def test_one_lattice_filtering_per_forward_and_backward():
    """The energy and its gradient come from one symmetric filtering in the forward; the
    backward filters nothing (one lattice per training step, not two)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountLattice(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func._overloadpacket.__name__ == "lattice_filter":
                self.calls.append(args[5] if len(args) > 5 else kwargs.get("symmetric", False))
            return func(*args, **(kwargs or {}))

    images, probs = _case()
    probs.requires_grad_(True)
    with CountLattice() as forward:
        loss = crf_loss(images, probs)
    with CountLattice() as backward:
        loss.backward()
    assert forward.calls == [True] and backward.calls == []
    # the saved (W + W^T) S is a constant: a second derivative raises instead of being wrong
    (g,) = torch.autograd.grad(crf_loss(images, probs), probs, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_regression_pinned_values():
    images, probs = _case(B=2, K=3, H=9, W=11, seed=42, dtype=torch.float64)
    probs.requires_grad_(True)
    loss = crf_loss(images, probs, weight=1.0, sigma_xy=5.0)
    loss.backward()
    g = probs.grad
    # computed once with this implementation (CPU, float64); the reference agrees to 1e-12
    assert loss.item() == pytest.approx(PINNED_LOSS, rel=1e-9)
    assert g.sum().item() == pytest.approx(PINNED_GRAD_SUM, rel=1e-9)
    assert g[0, 1, 4, 5].item() == pytest.approx(PINNED_GRAD_PIXEL, rel=1e-9)
    assert g.norm().item() == pytest.approx(PINNED_GRAD_NORM, rel=1e-9)


PINNED_LOSS = -57.63636188851012
PINNED_GRAD_SUM = -260.89170928442024
PINNED_GRAD_PIXEL = -0.6676156689278674
PINNED_GRAD_NORM = 12.749572311894825


def test_torch_compile():
    images, probs = _case()

    def step(p):
        loss = crf_loss(images, p, weight=1e-3)
        (grad,) = torch.autograd.grad(loss, p)
        return loss, grad

    eager_loss, eager_grad = step(probs.clone().requires_grad_(True))
    torch._dynamo.reset()
    compiled = torch.compile(lambda p: crf_loss(images, p, weight=1e-3), backend="aot_eager", fullgraph=True)
    p = probs.clone().requires_grad_(True)
    loss = compiled(p)
    loss.backward()
    torch.testing.assert_close(loss, eager_loss)
    torch.testing.assert_close(p.grad, eager_grad)


def test_bad_shapes():
    images, probs = _case()
    with pytest.raises(ValueError, match="images must be \\[B, 3, H, W\\]"):
        crf_loss(images[:, :2], probs)
    with pytest.raises(ValueError, match="probs must be \\[B, K, H, W\\]"):
        crf_loss(images, probs[..., :5])
    with pytest.raises(ValueError, match="roi must be \\[B, H, W\\]"):
        crf_loss(images, probs, roi=torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="need `lengths`"):
        multiframe_color_crf_loss(images, probs)
    with pytest.raises(ValueError, match="must sum to the number of frames"):
        multiframe_color_crf_loss(images, probs, lengths=[1, 2])


def _shots(S=3, n=4, K=2, H=6, W=5, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    frames = (torch.rand(S, n, 3, H, W, generator=g) * 255).round()
    probs = torch.softmax(torch.randn(S, n, K, H, W, generator=g), dim=2).to(dtype)
    return frames, probs


def _per_shot_loop(frames, probs, lengths, sigma_rgb=15.0, weight=2e-9):
    total = 0.0
    for s, L in enumerate(lengths):
        f = (frames[s, :L].to(probs.dtype) / sigma_rgb).permute(1, 0, 2, 3).reshape(1, 3, -1)
        p = probs[s, :L].permute(1, 0, 2, 3).reshape(1, probs.shape[2], -1)
        total = total + (p * lattice_filter_op(f, p)).sum()
    return -weight * total / len(lengths)


def test_multiframe_equals_per_shot_loop():
    frames, probs = _shots()
    lengths = [4, 2, 3]
    expected = _per_shot_loop(frames, probs, lengths, weight=1.0)
    got = multiframe_color_crf_loss(frames, probs, lengths=lengths, weight=1.0)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=0)
    # flat frame batch + lengths gives the same
    keep = torch.arange(4).view(1, 4) < torch.tensor(lengths).view(3, 1)
    flat_f, flat_p = frames[keep], probs[keep]
    got_flat = multiframe_color_crf_loss(flat_f, flat_p, lengths=lengths, weight=1.0)
    torch.testing.assert_close(got_flat, expected, rtol=1e-10, atol=0)
    # all frames real
    torch.testing.assert_close(
        multiframe_color_crf_loss(frames, probs, weight=1.0), _per_shot_loop(frames, probs, [4, 4, 4], weight=1.0),
        rtol=1e-10, atol=0,
    )


def test_multiframe_gradient_flows_only_to_real_frames():
    frames, probs = _shots(S=2, n=3)
    probs.requires_grad_(True)
    multiframe_color_crf_loss(frames, probs, lengths=[3, 1], weight=1.0).backward()
    assert probs.grad[1, 1:].abs().max() == 0
    assert probs.grad[0].abs().max() > 0 and probs.grad[1, 0].abs().max() > 0


def test_pad_shots():
    x = torch.arange(6.0).view(6, 1)
    padded, mask = pad_shots(x, [1, 3, 2])
    assert padded.shape == (3, 3, 1)
    assert padded[:, :, 0].tolist() == [[0, 0, 0], [1, 2, 3], [4, 5, 0]]
    assert mask.tolist() == [[True, False, False], [True, True, True], [True, True, False]]


def test_pure_torch_fallback_matches_op(monkeypatch):
    import bench.ops.lattice_filter as lf

    images, probs = _case(dtype=torch.float64)
    p1 = probs.clone().requires_grad_(True)
    loss_op = crf_loss(images, p1, weight=1.0)
    loss_op.backward()
    monkeypatch.setattr(lf, "_has_op", lambda: False)
    p2 = probs.clone().requires_grad_(True)
    loss = crf_loss(images, p2, weight=1.0)
    loss.backward()
    torch.testing.assert_close(loss, loss_op, rtol=1e-10, atol=0)
    torch.testing.assert_close(p2.grad, p1.grad, rtol=1e-10, atol=1e-12)
