"""Helpers to run the harness in-process on the small embedded datasets."""
from __future__ import annotations

import contextlib
from pathlib import Path

from bench.config import BUDGETS, apply_overrides
from bench.grid import Cell
from bench.registry import METHODS, get_dataset
from bench.runner import run_cell
from bench.settings import RunSettings
from tests.conftest import SMALL_DATASETS

SMOKE = BUDGETS["smoke"]


def small_dataset(name: str):
    cls = get_dataset(name)
    return cls(apply_overrides(cls.Config(), SMALL_DATASETS.get(name, {}), name))


def smoke_settings(dirs: dict, results: Path | None = None, **changes) -> RunSettings:
    """CPU, smoke budget, the test's data and cache folders."""
    fields = dict(budget=SMOKE, data_root=dirs["data"], results_dir=results or dirs.get("results", Path("results")),
                  cache_dir=dirs["cache"], device="cpu")
    fields.update(changes)
    return RunSettings(**fields)


def settings_at(data_root: Path) -> RunSettings:
    """Smoke settings on `data_root`, seed 0 (for building cells)."""
    return smoke_settings({"data": data_root, "cache": Path(data_root) / "cache"}, seeds=(0,))


@contextlib.contextmanager
def registered(*method_classes):
    """Test methods in the method registry for the block (cells name their plugins)."""
    for cls in method_classes:
        METHODS.register(cls)
    try:
        yield
    finally:
        for cls in method_classes:
            METHODS.unregister(cls.name)


def small_cell(method: str, dataset: str, seed: int) -> Cell:
    """A cell on the small version of `dataset`, the method at its test settings (cost only)."""
    overrides = {dataset: dict(SMALL_DATASETS[dataset])} if dataset in SMALL_DATASETS else {}
    settings = dict(getattr(METHODS.loaded().get(method), "test_settings", {}) or {})
    if settings:
        overrides[method] = settings
    return Cell(method, dataset, seed, overrides)


def run_small_cell(method: str, dataset: str, seed: int, dirs: dict, results: Path, method_cls=None,
                   **settings) -> dict:
    """Run a small cell at the smoke budget; `settings`: RunSettings fields to change."""
    small_dataset(dataset).prepare(dirs["data"])
    with registered(*([method_cls] if method_cls is not None else [])):
        return run_cell(small_cell(method_cls.name if method_cls else method, dataset, seed),
                        smoke_settings(dirs, results).replace(**settings))


def tiny_cells(methods: list[str], datasets: list[str], seeds: list[int], data_root: Path):
    """Grid cells of the small embedded datasets at the smoke budget (with their overrides)."""
    from bench.grid import build_cells

    overrides = {d: SMALL_DATASETS[d] for d in datasets if d in SMALL_DATASETS}
    settings = RunSettings(budget=SMOKE, data_root=data_root, results_dir=Path("unused"), cache_dir=Path("unused"),
                           seeds=tuple(seeds))
    return build_cells(methods, datasets, settings, overrides)[0]


def run_tiny_grid(methods: list[str], datasets: list[str], seeds: list[int], dirs: dict, results: Path, **kw):
    """run_grid on tiny cells (CPU, smoke budget); keyword arguments are RunSettings fields."""
    from bench.grid import run_grid

    cells = tiny_cells(methods, datasets, seeds, dirs["data"])
    return run_grid(cells, smoke_settings(dirs, results, **kw))
