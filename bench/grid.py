"""The grid: methods x datasets x seeds, resumable."""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench.config import Budget, apply_overrides, config_hash
from bench.entries import RESULT_SCHEMA, entry_checksum, method_file_sha256
from bench.registry import all_datasets, all_methods, get_dataset, get_method
from bench.runner import cell_config, result_path, run_cell

log = logging.getLogger(__name__)
DEFAULT_SEEDS = (0, 1, 2)
PROTOCOL_BUDGET = "quick"  # the leaderboard's budget: `bench submit` runs at it


@dataclass
class Cell:
    method_cls: type
    method_cfg: object
    dataset: object
    seed: int
    overrides: dict = field(default_factory=dict)  # the --set flags of this method and dataset
    results_dir: Path | None = None  # this cell's own result folder (None: the grid's); `bench sweep`: the value's

    def results_in(self, grid_results_dir: Path) -> Path:
        """The folder this cell's result goes to in a grid writing to `grid_results_dir`."""
        return Path(self.results_dir) if self.results_dir is not None else Path(grid_results_dir)

    def result_file(self, grid_results_dir: Path) -> Path:
        return result_path(self.results_in(grid_results_dir), self.dataset.name, self.method_cls.name, self.seed)

    @property
    def label(self) -> str:
        from bench.launch import cell_label

        return cell_label(self.dataset.name, self.method_cls.name, self.seed, self.results_dir)


@dataclass
class GridReport:
    ran: list
    resumed: list
    failed: list
    skipped: list  # (what, reason)
    submitted: list = field(default_factory=list)  # cells handed to a cluster (not waited for)


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
            mine = {o: dict(kv) for o, kv in overrides.items() if o in (mcls.name, dcls.name)}
            cells.extend(Cell(mcls, mcfg, dataset, seed, mine) for seed in seeds)
    return cells, skipped


def is_finished(path: Path, expected_hash: str, method_sha256: str | None) -> bool:
    """A finished cell: a sealed entry of the current schema, intact (checksum), with the
    expected config hash and written by the method file as it is now (`method_sha256`, from
    `bench.entries.method_file_sha256`). Older, edited or stale entries are rerun, as
    `leaderboard --check` would reject them."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict):
        return False
    written_by = (record.get("code_version") or {}).get("method_file_sha256")
    return (record.get("status") == "ok" and record.get("config_hash") == expected_hash
            and record.get("schema") == RESULT_SCHEMA and record.get("checksum") == entry_checksum(record)
            and written_by == method_sha256)


def _sweep_orphans(path: Path) -> None:
    """Remove temp files of this cell's result left by a killed writer (atomic writes put
    them beside the result as .<name>.<random>.tmp); the cell is about to be rewritten."""
    for orphan in path.parent.glob(f".{path.name}.*.tmp"):
        orphan.unlink(missing_ok=True)


def run_grid(cells: list[Cell], budget: Budget, *, data_root: Path, results_dir: Path, cache_dir: Path,
             device: torch.device, backbone: str = "small-cnn", weights=None, jobs: int | None = 1,
             launcher: str = "inline", slurm=None, wait: bool = True, submission: dict | None = None,
             threads: int | None = None, task_tables: bool = True) -> GridReport:
    """Run every unfinished cell: in this process (`jobs=1`), in `jobs` local worker processes
    (`None`: `bench.launch.auto_jobs`, one per core or GPU), or as a submitit job array
    (`launcher` "slurm" or "local", resources from `slurm`, a `bench.launch.SlurmConfig`).
    Finished cells (same config hash) are skipped.

    `threads`: torch threads per cell (default: this process's threads split among the local
    workers; a cluster task's cpus). CPU float reductions depend on the thread count, so
    results are bit-identical across `jobs` values at equal `threads`.

    `task_tables`: a cluster task regenerates the leaderboard tables beside `results_dir`
    after its cell (False where the caller writes its own tables there: `bench sweep`)."""
    from bench import launch

    if launcher not in launch.LAUNCHERS:
        raise ValueError(f"--launcher {launcher!r}: known launchers: {', '.join(launch.LAUNCHERS)}")
    if jobs is not None and jobs < 1:
        raise ValueError(f"--jobs {jobs}: needs at least 1")
    report = GridReport([], [], [], [])
    todo = []
    for cell in cells:
        cfg = cell_config(cell.method_cls, cell.method_cfg, cell.dataset, budget, cell.seed, backbone, weights)
        path = cell.result_file(results_dir)
        if is_finished(path, config_hash(cfg), method_file_sha256(cell.method_cls)):
            report.resumed.append(path)
        else:
            todo.append(cell)
    if threads is not None and threads < 1:
        raise ValueError(f"--threads {threads}: needs at least 1")
    if jobs is None:
        jobs = launch.auto_jobs(torch.device(device), len(todo))
    if launcher == "inline" and jobs == 1:
        if threads:
            torch.set_num_threads(threads)
        _run_inline(todo, report, budget, data_root=data_root, results_dir=results_dir, cache_dir=cache_dir,
                    device=device, backbone=backbone, weights=weights, submission=submission)
        return report
    specs = [launch.spec_of(cell) for cell in todo]
    prepared = set()
    for cell in todo:  # once, here, before any worker reads the data
        if cell.dataset.name not in prepared:
            cell.dataset.prepare(data_root)
            prepared.add(cell.dataset.name)
    for cell in todo:
        _sweep_orphans(cell.result_file(results_dir))
    opts = launch.options(budget, data_root=data_root, results_dir=results_dir, cache_dir=cache_dir, device=device,
                          backbone=backbone, weights=weights, submission=submission)
    if not specs:
        return report
    if launcher == "inline":
        summaries = launch.run_local_pool(specs, dataclasses.replace(opts, threads=threads), jobs)
    else:
        task_opts = dataclasses.replace(opts, threads=threads, write_tables=task_tables)
        summaries = launch.run_submitit(specs, task_opts, "slurm" if launcher == "slurm" else "local",
                                        slurm or launch.SlurmConfig(), wait)
    order = {s.label: i for i, s in enumerate(specs)}
    for summary in sorted(summaries, key=lambda s: order[s["label"]]):
        {"ok": report.ran, "submitted": report.submitted}.get(summary["status"], report.failed).append(summary["label"])
    return report


def _run_inline(todo: list[Cell], report: GridReport, budget: Budget, *, data_root, results_dir, cache_dir, device,
                backbone, weights, submission) -> None:
    prepared = set()
    with tqdm(total=len(todo), desc="grid", unit="cell", dynamic_ncols=True) as bar:
        for cell in todo:
            label = cell.label
            bar.set_postfix_str(label)
            if cell.dataset.name not in prepared:
                cell.dataset.prepare(data_root)
                prepared.add(cell.dataset.name)
            _sweep_orphans(cell.result_file(results_dir))
            record = run_cell(cell.method_cls, cell.method_cfg, cell.dataset, budget, cell.seed, data_root=data_root,
                              results_dir=cell.results_in(results_dir), cache_dir=cache_dir, device=device,
                              backbone=backbone, weights=weights, submission=submission)
            (report.ran if record["status"] == "ok" else report.failed).append(label)
            bar.update(1)
