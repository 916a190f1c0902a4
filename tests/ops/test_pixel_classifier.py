import pytest
import torch

from bench._ext import has_op
from bench.ops.pixel_classifier import (
    pixel_classifier_probs,
    pixel_classifier_probs_reference,
    pixel_seed_ce,
    pixel_seed_ce_dense,
    pixel_seed_ce_reference,
)

needs_op = pytest.mark.skipif(not has_op("pixel_seed_ce"), reason="bench._C not built")


def _inputs(B=2, C=9, h=5, w=6, K=2, dtype=torch.float64, seed=0, n_seeds=3, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(B, C, h, w, generator=g, dtype=dtype)
    wt = torch.randn(K, C, generator=g, dtype=dtype) / C**0.5
    b = torch.randn(K, generator=g, dtype=dtype)
    labels = torch.full((B, h, w), 255, dtype=torch.int64)
    for i in range(B):
        idx = torch.randperm(h * w, generator=g)[:n_seeds]
        labels[i].view(-1)[idx] = torch.randint(0, K, (n_seeds,), generator=g)
    return [t.to(device) for t in (f, wt, b, labels)]


@needs_op
@pytest.mark.parametrize("K", [1, 2, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_probs_match_reference(K, dtype):
    f, w, b, _ = _inputs(K=K, dtype=dtype, h=9, w=13)  # 117 pixels: a partial tile
    torch.testing.assert_close(pixel_classifier_probs(f, w, b), pixel_classifier_probs_reference(f, w, b))
    torch.testing.assert_close(
        pixel_classifier_probs(f, w, b, K - 1), pixel_classifier_probs_reference(f, w, b, K - 1)
    )
    assert pixel_classifier_probs(f, w, b, 0).shape == (2, 9, 13)


@needs_op
@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seed_ce_matches_reference_and_dense(K, dtype):
    f, w, b, labels = _inputs(K=K, dtype=dtype, n_seeds=7)
    args = [t.clone().requires_grad_() for t in (f, w, b)]
    loss = pixel_seed_ce(*args, labels)
    grads = torch.autograd.grad(loss, args)
    for fn in (pixel_seed_ce_reference, pixel_seed_ce_dense):
        rargs = [t.clone().requires_grad_() for t in (f, w, b)]
        ref = fn(*rargs, labels)
        torch.testing.assert_close(loss, ref)
        for g, r in zip(grads, torch.autograd.grad(ref, rargs)):
            torch.testing.assert_close(g, r)


@needs_op
def test_seed_ce_uint8_labels_and_custom_ignore():
    f, w, b, labels = _inputs()
    a = pixel_seed_ce(f, w, b, labels.to(torch.uint8))
    torch.testing.assert_close(a, pixel_seed_ce_reference(f, w, b, labels))
    relabel = torch.where(labels == 255, torch.full_like(labels, -1), labels)
    torch.testing.assert_close(pixel_seed_ce(f, w, b, relabel, ignore_index=-1), a)


@needs_op
def test_seed_ce_without_seeds_is_zero():
    f, w, b, labels = _inputs(n_seeds=0)
    f.requires_grad_()
    loss = pixel_seed_ce(f, w, b, labels)
    assert loss.item() == 0.0
    loss.backward()
    assert bool((f.grad == 0).all())
    assert pixel_seed_ce_reference(f, w, b, labels).item() == 0.0


@needs_op
def test_seed_ce_gradient_is_sparse():
    f, w, b, labels = _inputs(n_seeds=2)
    f.requires_grad_()
    pixel_seed_ce(f, w, b, labels).backward()
    touched = f.grad.abs().sum(1) > 0
    assert torch.equal(touched, labels != 255)


@needs_op
def test_gradcheck_seed_ce():
    f, w, b, labels = _inputs(C=5, h=4, w=4, K=3)
    args = tuple(t.requires_grad_() for t in (f, w, b))
    assert torch.autograd.gradcheck(lambda *a: pixel_seed_ce(*a, labels), args)


@needs_op
def test_opcheck():
    f, w, b, labels = _inputs(C=5, h=4, w=4, K=3)
    torch.library.opcheck(torch.ops.wsolbench.pixel_classifier_probs.default, (f, w, b, -1))
    torch.library.opcheck(torch.ops.wsolbench.pixel_classifier_probs.default, (f, w, b, 1))
    args = tuple(t.clone().requires_grad_() for t in (f, w, b))
    torch.library.opcheck(torch.ops.wsolbench.pixel_seed_ce.default, (*args, labels, 255))


@needs_op
def test_bad_inputs():
    f, w, b, labels = _inputs(K=2)
    with pytest.raises(RuntimeError, match=r"features must be \[B, C, h, w\]"):
        pixel_seed_ce(f[0], w, b, labels)
    with pytest.raises(RuntimeError, match="features must be float32 or float64"):
        pixel_classifier_probs(f.half(), w.half(), b.half())
    with pytest.raises(RuntimeError, match=r"weight must be \[K, C\] with C = 9"):
        pixel_seed_ce(f, w[:, :4], b, labels)
    with pytest.raises(RuntimeError, match=r"bias must be \[K\] with K = 2"):
        pixel_seed_ce(f, w, b[:1], labels)
    with pytest.raises(RuntimeError, match="weight and bias must have the dtype of features"):
        pixel_seed_ce(f, w.float(), b, labels)
    with pytest.raises(RuntimeError, match=r"labels must be \[B, h, w\]"):
        pixel_seed_ce(f, w, b, labels[:, :2])
    with pytest.raises(RuntimeError, match="labels must be int64"):
        pixel_seed_ce(f, w, b, labels.int())
    bad = labels.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(RuntimeError, match=r"labels must be in \[0, 2\)"):
        pixel_seed_ce(f, w, b, bad)
    with pytest.raises(RuntimeError, match="fg_class must be < K = 2"):
        pixel_classifier_probs(f, w, b, 2)


@pytest.mark.cuda
@pytest.mark.parametrize("K", [2, 5, 20])
def test_cuda_matches_cpu(K):
    f, w, b, labels = _inputs(B=3, C=70, h=7, w=9, K=K, dtype=torch.float32, n_seeds=11)
    torch.testing.assert_close(pixel_classifier_probs(f.cuda(), w.cuda(), b.cuda()).cpu(), pixel_classifier_probs(f, w, b))
    torch.testing.assert_close(
        pixel_classifier_probs(f.cuda(), w.cuda(), b.cuda(), 1).cpu(), pixel_classifier_probs(f, w, b, 1)
    )
    cpu = [t.clone().requires_grad_() for t in (f, w, b)]
    gpu = [t.cuda().requires_grad_() for t in (f, w, b)]
    lc = pixel_seed_ce(*cpu, labels)
    lg = pixel_seed_ce(*gpu, labels.cuda())
    torch.testing.assert_close(lg.cpu(), lc)
    for a, g in zip(torch.autograd.grad(lc, cpu), torch.autograd.grad(lg, gpu)):
        torch.testing.assert_close(g.cpu(), a, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_cuda_gradcheck_and_opcheck():
    f, w, b, labels = _inputs(C=5, h=4, w=4, K=3, device="cuda")
    args = tuple(t.requires_grad_() for t in (f, w, b))
    assert torch.autograd.gradcheck(lambda *a: pixel_seed_ce(*a, labels), args)
    torch.library.opcheck(torch.ops.wsolbench.pixel_seed_ce.default, (*args, labels, 255))
    torch.library.opcheck(torch.ops.wsolbench.pixel_classifier_probs.default, (f.detach(), w.detach(), b.detach(), -1))


def test_fallback_without_extension(monkeypatch):
    import bench.ops.pixel_classifier as mod

    f, w, b, labels = _inputs()
    monkeypatch.setattr(mod, "has_op", lambda name: False)
    torch.testing.assert_close(mod.pixel_seed_ce(f, w, b, labels), pixel_seed_ce_reference(f, w, b, labels))
    torch.testing.assert_close(mod.pixel_classifier_probs(f, w, b, 1), pixel_classifier_probs_reference(f, w, b, 1))
