"""The grid: methods x datasets x seeds, resumable."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench.config import Budget, apply_overrides, config_hash
from bench.registry import all_datasets, all_methods, get_dataset, get_method
from bench.runner import cell_config, result_path, run_cell

log = logging.getLogger(__name__)
DEFAULT_SEEDS = (0, 1, 2)


@dataclass
class Cell:
    method_cls: type
    method_cfg: object
    dataset: object
    seed: int


@dataclass
class GridReport:
    ran: list
    resumed: list
    failed: list
    skipped: list  # (what, reason)


def build_cells(methods: list[str] | None, datasets: list[str] | None, seeds, budget: Budget, data_root: Path,
                overrides: dict[str, dict[str, str]] | None = None) -> tuple[list[Cell], list[tuple[str, str]]]:
    """Cells to run and (what, why) for everything skipped. Named datasets must exist; with
    `datasets=None` (--all) a dataset missing from disk is skipped with one line."""
    overrides = overrides or {}
    method_classes = [get_method(m) for m in methods] if methods else list(all_methods().values())
    dataset_classes = [get_dataset(d) for d in datasets] if datasets else list(all_datasets().values())
    for owner in overrides:
        if owner not in all_methods() and owner not in all_datasets():
            raise ValueError(f"--set names {owner!r}, which is neither a method nor a dataset")
    skipped: list[tuple[str, str]] = []
    cells: list[Cell] = []
    for dcls in dataset_classes:
        dataset = dcls(apply_overrides(dcls.Config(), overrides.get(dcls.name, {}), dcls.name))
        why = dataset.missing(data_root)
        if why is not None:
            if datasets:
                raise FileNotFoundError(why)
            skipped.append((dcls.name, why))
            continue
        for mcls in method_classes:
            reason = mcls.skip(dataset)
            if reason:
                skipped.append((f"{mcls.name} x {dcls.name}", reason))
                continue
            mcfg = apply_overrides(mcls.Config(), overrides.get(mcls.name, {}), mcls.name)
            cells.extend(Cell(mcls, mcfg, dataset, seed) for seed in seeds)
    return cells, skipped


def is_finished(path: Path, expected_hash: str) -> bool:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return record.get("status") == "ok" and record.get("config_hash") == expected_hash


def _sweep_orphans(path: Path) -> None:
    """Remove temp files of this cell's result left by a killed writer (atomic writes put
    them beside the result as .<name>.<random>.tmp); the cell is about to be rewritten."""
    for orphan in path.parent.glob(f".{path.name}.*.tmp"):
        orphan.unlink(missing_ok=True)


def run_grid(cells: list[Cell], budget: Budget, *, data_root: Path, results_dir: Path, cache_dir: Path,
             device: torch.device, backbone: str = "small-cnn", weights=None) -> GridReport:
    report = GridReport([], [], [], [])
    todo = []
    for cell in cells:
        cfg = cell_config(cell.method_cls, cell.method_cfg, cell.dataset, budget, cell.seed, backbone, weights)
        path = result_path(results_dir, cell.dataset.name, cell.method_cls.name, cell.seed)
        if is_finished(path, config_hash(cfg)):
            report.resumed.append(path)
        else:
            todo.append(cell)
    prepared = set()
    with tqdm(total=len(todo), desc="grid", unit="cell", dynamic_ncols=True) as bar:
        for cell in todo:
            label = f"{cell.dataset.name}/{cell.method_cls.name}/seed{cell.seed}"
            bar.set_postfix_str(label)
            if cell.dataset.name not in prepared:
                cell.dataset.prepare(data_root)
                prepared.add(cell.dataset.name)
            _sweep_orphans(result_path(results_dir, cell.dataset.name, cell.method_cls.name, cell.seed))
            record = run_cell(cell.method_cls, cell.method_cfg, cell.dataset, budget, cell.seed, data_root=data_root,
                              results_dir=results_dir, cache_dir=cache_dir, device=device, backbone=backbone,
                              weights=weights)
            (report.ran if record["status"] == "ok" else report.failed).append(label)
            bar.update(1)
    return report
