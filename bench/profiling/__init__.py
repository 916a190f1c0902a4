"""Kernel speed tables for `python -m bench profile`.

Each module in this package registers one profile per op family with `@register_profile`:
a function `(device: torch.device, size: str) -> list[ProfileTable]` where `size` is "full"
(the sizes named in the issues) or "small" (seconds, for tests). Modules are discovered by
path, so adding an op's profile is adding one file here."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

import torch

PROFILES: dict[str, Callable] = {}


@dataclass
class ProfileTable:
    title: str
    rows: list[dict]
    notes: list[str] = field(default_factory=list)


def register_profile(name: str):
    def wrap(fn):
        if name in PROFILES:
            raise ValueError(f"profile {name!r} registered twice")
        PROFILES[name] = fn
        return fn

    return wrap


def load_profiles() -> dict[str, Callable]:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return PROFILES


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
