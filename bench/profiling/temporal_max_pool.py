"""Profile "temporal_max_pool": CAM-TMP (temporal_max_pool) against a device-to-device copy of the same bytes."""
from __future__ import annotations

import torch

from bench._ext import has_op
from bench.ops.temporal_max_pool import temporal_max_pool, temporal_max_pool_reference
from bench.profiling import ProfileTable, register_profile, time_fn

SIZES = {"full": (32, 8, 224, 224), "small": (2, 4, 32, 32)}
CASES = [
    ("n=1 before", dict(n=1, direction="before")),
    ("n=2 both", dict(n=2, direction="both")),
    ("n=1 before, reweight h=1, normalize", dict(n=1, direction="before", reweight_h=1.0, normalize=True)),
]


@register_profile("temporal_max_pool")
def profile_tmp(device: torch.device, size: str) -> list[ProfileTable]:
    B, T, H, W = SIZES[size]
    reps = dict(warmup=1, repeat=3) if (size == "full" and device.type == "cpu") else {}
    g = torch.Generator(device=device).manual_seed(0)
    cams = torch.rand(B, T, H, W, device=device, generator=g)
    shots = (torch.arange(T, device=device) >= T // 2).long().expand(B, T).contiguous()  # 2 shots
    dst = torch.empty_like(cams)
    n_el = cams.numel()
    t_copy = time_fn(lambda: dst.copy_(cams), device, **reps)
    copy_bw = 2 * n_el * cams.element_size() / (t_copy * 1e-3)
    # minimum traffic of the op: read the CAMs once, write the pooled maps and int32 winners
    op_bytes = n_el * (2 * cams.element_size() + 4)
    t_clone = time_fn(lambda: cams.clone(), device, **reps)
    rows = [{"case": "copy (same bytes in + out)", "impl": "copy_ into a preallocated tensor", "ms": round(t_copy, 3),
             "GB/s": round(copy_bw / 1e9, 2), "fraction of copy bandwidth": 1.0, "speedup vs reference": None},
            {"case": "copy (same bytes in + out)", "impl": "clone (allocates its output, as the op does)",
             "ms": round(t_clone, 3), "GB/s": round(2 * n_el * cams.element_size() / (t_clone * 1e-3) / 1e9, 2),
             "fraction of copy bandwidth": round(t_copy / t_clone, 3), "speedup vs reference": None}]
    with torch.no_grad():
        for name, kw in CASES:
            t_ref = time_fn(lambda: temporal_max_pool_reference(cams, shots, **kw), device, **reps)
            impls = [("reference (pure torch)", t_ref)]
            if has_op("temporal_max_pool"):
                impls.insert(0, ("wsolbench op", time_fn(lambda: temporal_max_pool(cams, shots, **kw), device, **reps)))
            for impl, t in impls:
                bw = op_bytes / (t * 1e-3)
                rows.append({"case": name, "impl": impl, "ms": round(t, 3), "GB/s": round(bw / 1e9, 2),
                             "fraction of copy bandwidth": round(bw / copy_bw, 3),
                             "speedup vs reference": round(t_ref / t, 2)})
    notes = [
        f"cams [{B}, {T}, {H}, {W}] float32 on {device}, 2 shots per clip; op bytes = read cams + write "
        "pooled + write int32 winner (12 B/pixel), copy bytes = 8 B/pixel. The fraction is against copy_ "
        "into a preallocated tensor; on CPU the op also pays first-touch page faults of its fresh outputs "
        "(compare the clone row), on CUDA the caching allocator hides them.",
    ]
    return [ProfileTable(title=f"temporal_max_pool ({size})", rows=rows, notes=notes)]
