"""Profile "pixel": the PixelCAM pixel classifier ops against their composite PyTorch forms."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.ops.pixel_classifier import (
    pixel_classifier_probs,
    pixel_seed_ce,
    pixel_seed_ce_dense,
    pixel_seed_ce_reference,
)
from bench.profiling import ProfileTable, register_profile, time_fn

SIZES = {"full": (32, 2048, 28, 28), "small": (2, 64, 8, 8)}
K = 2
SEEDS_PER_IMAGE = 2


def _bytes_allocated(fn) -> int | None:
    """CPU: total bytes allocated by fn() (sum of allocations, not a peak), via the profiler."""
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        return int(sum(max(e.self_cpu_memory_usage, 0) for e in prof.events()))
    except Exception:  # pragma: no cover - profiler unavailable
        return None


def _memory(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return "peak MB over inputs", round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)
    got = _bytes_allocated(fn)
    return "MB allocated (sum, CPU profiler)", None if got is None else round(got / 2**20, 3)


@register_profile("pixel")
def profile_pixel(device: torch.device, size: str) -> list[ProfileTable]:
    B, C, h, w = SIZES[size]
    g = torch.Generator(device=device).manual_seed(0)
    feats = torch.randn(B, C, h, w, device=device, generator=g)
    weight = (torch.randn(K, C, device=device, generator=g) / C**0.5).requires_grad_()
    bias = torch.zeros(K, device=device).requires_grad_()
    labels = torch.full((B, h, w), 255, dtype=torch.int64, device=device)
    pix = torch.rand(B, h * w, device=device, generator=g).argsort(1)[:, :SEEDS_PER_IMAGE]
    cls = torch.randint(0, K, (B, SEEDS_PER_IMAGE), device=device, generator=g)
    labels.view(B, -1).scatter_(1, pix, cls)
    feats_g = feats.clone().requires_grad_()
    reps = dict(warmup=1, repeat=5) if (size == "full" and device.type == "cpu") else {}

    def step(loss_fn):
        def run():
            loss = loss_fn(feats_g, weight, bias, labels)
            loss.backward()
            feats_g.grad = weight.grad = bias.grad = None

        return run

    rows = []
    impls = [("wsolbench pixel_seed_ce", pixel_seed_ce), ("composite: 1x1 conv + masked CE", pixel_seed_ce_dense),
             ("gather reference", pixel_seed_ce_reference)]
    t_dense = None
    for name, fn in impls:
        t = time_fn(step(fn), device, **reps)
        t_dense = t if fn is pixel_seed_ce_dense else t_dense
        mem_key, mem = _memory(step(fn), device)
        rows.append({"impl": name, "fwd+bwd ms": round(t, 3), mem_key: mem})
    for r in rows:
        r["speedup vs composite"] = round(t_dense / r["fwd+bwd ms"], 2)
    train = ProfileTable(
        title=f"pixel_seed_ce training step ({size})", rows=rows,
        notes=[f"features [{B}, {C}, {h}, {w}] float32 (requires grad), K={K}, {SEEDS_PER_IMAGE} seeds per "
               f"image, on {device}. Memory on CPU is the sum of allocations, not a peak."],
    )

    with torch.no_grad():
        t_op = time_fn(lambda: pixel_classifier_probs(feats, weight, bias, 1), device, **reps)
        t_ref = time_fn(lambda: F.conv2d(feats, weight[:, :, None, None], bias).softmax(1)[:, 1], device, **reps)
    infer = ProfileTable(
        title=f"pixel_classifier_probs foreground map ({size})",
        rows=[{"impl": "wsolbench pixel_classifier_probs", "ms": round(t_op, 3), "speedup vs composite": round(t_ref / t_op, 2)},
              {"impl": "composite: 1x1 conv + softmax", "ms": round(t_ref, 3), "speedup vs composite": 1.0}],
        notes=[f"features [{B}, {C}, {h}, {w}] float32 on {device}, K={K}."],
    )
    return [train, infer]
