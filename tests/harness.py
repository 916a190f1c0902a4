"""Helpers to run the harness in-process on the small embedded datasets."""
from __future__ import annotations

from pathlib import Path

import torch

from bench.config import BUDGETS, apply_overrides
from bench.registry import get_dataset, get_method
from bench.runner import run_cell
from tests.conftest import SMALL_DATASETS

SMOKE = BUDGETS["smoke"]


def small_dataset(name: str):
    cls = get_dataset(name)
    return cls(apply_overrides(cls.Config(), SMALL_DATASETS.get(name, {}), name))


def run_small_cell(method: str, dataset: str, seed: int, dirs: dict, results: Path, method_cls=None) -> dict:
    ds = small_dataset(dataset)
    ds.prepare(dirs["data"])
    mcls = method_cls or get_method(method)
    return run_cell(mcls, mcls.Config(), ds, SMOKE, seed, data_root=dirs["data"], results_dir=results,
                    cache_dir=dirs["cache"], device=torch.device("cpu"))


def tiny_cells(methods: list[str], datasets: list[str], seeds: list[int], data_root: Path):
    """Grid cells of the small embedded datasets at the smoke budget (with their overrides)."""
    from bench.grid import build_cells

    overrides = {d: SMALL_DATASETS[d] for d in datasets if d in SMALL_DATASETS}
    return build_cells(methods, datasets, seeds, SMOKE, data_root, overrides)[0]


def run_tiny_grid(methods: list[str], datasets: list[str], seeds: list[int], dirs: dict, results: Path, **kw):
    """run_grid on tiny cells (CPU, smoke budget); keyword arguments go to run_grid."""
    from bench.grid import run_grid

    cells = tiny_cells(methods, datasets, seeds, dirs["data"])
    return run_grid(cells, SMOKE, data_root=dirs["data"], results_dir=results, cache_dir=dirs["cache"],
                    device=torch.device("cpu"), **kw)
