"""The grid: methods x datasets x seeds, resumable."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import apply_overrides, config_hash, method_config
from bench.entries import is_finished_entry as is_finished
from bench.entries import method_file_sha256
from bench.io import check_writable
from bench.registry import all_datasets, all_methods, get_dataset, get_method
from bench.runner import cell_config, record_failure, result_path, run_cell
from bench.settings import RunSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One cell as plain data: method and dataset names, the seed, the `--set` overrides that
    concern them and the cell's own result folder. The grid resumes it, a worker process or a
    cluster task receives it as it is, and `build` makes its plugins from the registry (so only
    registered plugins run, wherever the cell goes)."""

    method: str
    dataset: str
    seed: int
    overrides: dict = field(default_factory=dict)  # {"<method>": {key: value}, "<dataset>": {key: value}}
    results_dir: str | None = None  # None: the run's results folder; `bench sweep`: the value's

    def build(self, budget: str):
        """(method class, method config, dataset instance): the defaults, the method's paper preset
        for the dataset under the `paper` budget (`bench.config.method_config`), the overrides."""
        mcls, dcls = get_method(self.method), get_dataset(self.dataset)
        mcfg = method_config(mcls, self.dataset, budget, self.overrides.get(self.method, {}))
        dataset = dcls(apply_overrides(dcls.Config(), self.overrides.get(self.dataset, {}), self.dataset))
        return mcls, mcfg, dataset

    def results_in(self, settings) -> Path:
        """The folder this cell's result goes to."""
        return Path(self.results_dir) if self.results_dir is not None else Path(settings.results_dir)

    def result_file(self, settings) -> Path:
        return result_path(self.results_in(settings), self.dataset, self.method, self.seed)

    def run(self, settings) -> dict:
        """Run the cell here and write its entry (`bench.runner.run_cell`); its record."""
        return run_cell(self, settings)

    def record_failure(self, settings, error: str) -> dict:
        """Write the failed entry of the cell when it could not (its worker process died)."""
        return record_failure(self, settings, error)

    @property
    def label(self) -> str:
        """"<dataset>/<method>/seed<k>", prefixed by the name of the cell's own result folder if it
        has one (a sweep's value: "joint_weight=0.03/synth-video/colocam/seed0")."""
        label = f"{self.dataset}/{self.method}/seed{self.seed}"
        return f"{Path(self.results_dir).name}/{label}" if self.results_dir is not None else label


@dataclass
class GridReport:
    ran: list
    resumed: list
    failed: list
    skipped: list  # (what, reason)
    submitted: list = field(default_factory=list)  # cells handed to a cluster (not waited for)


def build_cells(methods: list[str] | None, datasets: list[str] | None, settings: RunSettings,
                overrides: dict[str, dict[str, str]] | None = None) -> tuple[list[Cell], list[tuple[str, str]]]:
    """Cells to run (every seed of `settings`) and (what, why) for everything skipped. Named
    datasets must exist under `settings.data_root`; with `datasets=None` (--all) a dataset
    missing from disk is skipped with one line."""
    overrides = overrides or {}
    method_classes = [get_method(m) for m in methods] if methods else list(all_methods().values())
    dataset_classes = [get_dataset(d) for d in datasets] if datasets else list(all_datasets().values())
    for owner in overrides:
        if owner not in all_methods() and owner not in all_datasets():
            raise ValueError(f"--set names {owner!r}, which is neither a method nor a dataset")
    skipped: list[tuple[str, str]] = []
    cells: list[Cell] = []
    for dcls in dataset_classes:
        if not datasets and not dcls.in_grid:
            skipped.append((dcls.name, "a transfer target only (python -m bench run --transfer ...)"))
            continue
        dataset = dcls(apply_overrides(dcls.Config(), overrides.get(dcls.name, {}), dcls.name))
        why = dataset.missing(settings.data_root)
        if why is not None:
            if datasets:
                raise FileNotFoundError(why)
            skipped.append((dcls.name, why))
            continue
        for mcls in method_classes:
            if not methods and not mcls.in_grid:
                skipped.append((f"{mcls.name} x {dcls.name}", "left out of --all (run it by name: --methods "
                                                             f"{mcls.name})"))
                continue
            reason = mcls.skip(dataset)
            if reason:
                skipped.append((f"{mcls.name} x {dcls.name}", reason))
                continue
            apply_overrides(mcls.Config(), overrides.get(mcls.name, {}), mcls.name)  # bad keys fail here, not in a worker
            mine = {o: dict(kv) for o, kv in overrides.items() if o in (mcls.name, dcls.name)}
            cells.extend(Cell(mcls.name, dcls.name, seed, mine) for seed in settings.seeds)
    return cells, skipped


def _refuse_other_runs(paths: list[Path], settings: RunSettings) -> None:
    """A results folder holds one budget and backbone: a cell never silently replaces an entry
    written under others (`--overwrite` allows it; or use another `--results`)."""
    clashes = []
    for path in paths:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or record.get("status") != "ok":
            continue
        theirs = (record.get("budget"), record.get("backbone"))
        if theirs != (settings.budget.name, settings.backbone):
            clashes.append(f"{path} (budget {theirs[0]}, backbone {theirs[1]})")
    if clashes:
        more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
        raise ValueError(f"this run (budget {settings.budget.name}, backbone {settings.backbone}) would replace entries "
                         f"of another run: {'; '.join(clashes[:3])}{more}; write elsewhere with --results DIR, or "
                         f"pass --overwrite to replace them")


def _sweep_orphans(path: Path) -> None:
    """Remove temp files of this cell's result left by a killed writer (atomic writes put
    them beside the result as .<name>.<random>.tmp); the cell is about to be rewritten."""
    for orphan in path.parent.glob(f".{path.name}.*.tmp"):
        orphan.unlink(missing_ok=True)


def run_grid(cells: list[Cell], settings: RunSettings) -> GridReport:
    """Run every unfinished cell through `bench.launch.execute`: in this process
    (`settings.jobs` 1), in local worker processes (`jobs` N, or None: one per core or GPU), or
    as a submitit job array (`launcher` "slurm" or "local"). Finished cells (same config hash,
    intact, written by the method file as it is) are skipped. At equal `settings.threads`,
    results do not depend on `jobs` (CPU float reductions depend on the thread count)."""
    from bench import launch

    report = GridReport([], [], [], [])
    todo = []
    for cell in cells:
        method_cls, method_cfg, dataset = cell.build(settings.budget.name)
        cfg = cell_config(method_cls, method_cfg, dataset, cell.seed, settings)
        path = cell.result_file(settings)
        if is_finished(path, config_hash(cfg), method_file_sha256(method_cls), settings.val_metrics):
            report.resumed.append(path)
        else:
            todo.append((cell, dataset))
    if not settings.overwrite:
        _refuse_other_runs([cell.result_file(settings) for cell, _ in todo], settings)
    for folder in sorted({str(cell.results_in(settings)) for cell, _ in todo}):
        check_writable(Path(folder), "results folder")
    if todo:
        check_writable(settings.cache_dir, "--cache-dir")
    prepared = set()
    for cell, dataset in todo:  # once, here, before any worker reads the data
        if cell.dataset not in prepared:
            dataset.prepare(settings.data_root)
            prepared.add(cell.dataset)
        _sweep_orphans(cell.result_file(settings))
    todo = [cell for cell, _ in todo]
    if not todo:
        return report
    jobs = settings.jobs or launch.auto_jobs(settings.torch_device, len(todo))
    if settings.launcher == "inline" and jobs == 1:
        summaries = launch.run_inline(todo, settings)
    elif settings.launcher == "inline":
        summaries = launch.run_local_pool(todo, settings, jobs)
    else:
        summaries = launch.run_submitit(todo, settings)
    order = {c.label: i for i, c in enumerate(todo)}
    for summary in sorted(summaries, key=lambda s: order[s["label"]]):
        {"ok": report.ran, "submitted": report.submitted}.get(summary["status"], report.failed).append(summary["label"])
    return report
