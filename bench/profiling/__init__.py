"""Kernel speed tables for `python -m bench profile`.

Each module in this package registers one profile per op family with `@register_profile`:
a function `(device: torch.device, size: str) -> list[ProfileTable]` where `size` is "full"
(the sizes of the performance targets) or "small" (seconds, for tests). Modules are discovered by
path, so adding an op's profile is adding one file here."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

import torch

from bench.registry import Registry


def _load_profile_modules() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


PROFILES = Registry("profile", _load_profile_modules)


@dataclass
class ProfileTable:
    title: str
    rows: list[dict]
    notes: list[str] = field(default_factory=list)


def register_profile(name: str):
    def wrap(fn):
        return PROFILES.register(fn, name)

    return wrap


def load_profiles() -> dict[str, Callable]:
    return PROFILES.all()


def count_gflop(fn: Callable[[], object]) -> float:
    """GFLOP of one call of `fn()`: convolutions and matrix products only, with the formulas of
    `torch.utils.flop_counter` (device-independent; the custom ops are not counted)."""
    # FlopCounterMode itself cannot be used: its module tracker fails on `torch.autograd.grad`
    # with respect to a leaf (what the gradient CAMs do), so this counts with its formulas only.
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.flops += formula(*args, **kwargs, out_val=out)
            return out

    with Counter() as counter:
        fn()
    return counter.flops / 1e9


def time_breakdown(fn: Callable[[], object], device: torch.device, iterations: int = 5, top: int = 12) -> list[dict]:
    """Where one call of `fn()` spends its time, by kernel (CUDA: each kernel, memset and copy
    on the device) or by op (CPU: self time), from `torch.profiler` over `iterations` calls after
    one warm-up call; the `top` largest, per call, with their share of the total."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(iterations):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [(e.key, getattr(e, attr), e.count) for e in prof.key_averages() if getattr(e, attr) > 0]
    total = sum(t for _, t, _ in events) or 1.0
    events.sort(key=lambda e: -e[1])
    return [{"kernel" if device.type == "cuda" else "op": name if len(name) <= 70 else name[:67] + "...",
             "calls per run": round(count / iterations, 1), "us per run": round(t / iterations, 1),
             "share %": round(100 * t / total, 1)} for name, t, count in events[:top]]


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int = 3, repeat: int = 10) -> float:
    """Median wall time of `fn()` in milliseconds, synchronising the device around each call."""
    import statistics
    import time

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
