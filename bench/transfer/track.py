"""A transfer pair end to end: its two reference rows and every adaptation, for some seeds
(what `python -m bench run --transfer SRC:TGT` is meant to run), and the pair's table."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from bench.config import apply_overrides
from bench.io import check_writable
from bench.registry import get_dataset
from bench.settings import RunSettings
from bench.transfer.adaptation import SourceOnly, all_adaptations, get_adaptation
from bench.transfer.cell import (TARGET_SUPERVISED, finished_transfer_entry, pair_name, record_transfer_failure,
                                 run_target_supervised, run_transfer_cell, transfer_result_path)


def parse_pair(text: str) -> tuple[str, str]:
    """"SRC:TGT" -> (SRC, TGT)."""
    source, sep, target = text.partition(":")
    if not sep or not source or not target:
        raise ValueError(f"--transfer {text!r}: expected SOURCE:TARGET (e.g. synth-tissue:synth-tissue-shifted)")
    return source, target


@dataclass(frozen=True)
class TransferCell:
    """One cell of a pair as plain data (names, a seed, the `--set` values by owner), so that a
    pool worker builds its datasets and adaptation from the registries as a grid cell does."""

    source: str
    target: str
    adaptation: str  # an adaptation's name, "source-only" or TARGET_SUPERVISED
    seed: int
    overrides: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"transfer/{pair_name(self.source, self.target)}/{self.adaptation}/seed{self.seed}"

    @property
    def dataset(self) -> str:  # the pool's interleaving groups cells by (dataset, seed)
        return pair_name(self.source, self.target)

    def results_in(self, settings) -> Path:
        return Path(settings.results_dir)

    def parts(self):
        """(source, target, adaptation class or None for the upper reference, its config)."""
        source, target = (_dataset(name, self.overrides) for name in (self.source, self.target))
        if self.adaptation == TARGET_SUPERVISED:
            return source, target, None, None
        cls = SourceOnly if self.adaptation == SourceOnly.name else get_adaptation(self.adaptation)
        return source, target, cls, apply_overrides(cls.Config(), self.overrides.get(cls.name, {}), cls.name)

    def finished(self, settings: RunSettings) -> dict | None:
        source, target, cls, cfg = self.parts()
        return finished_transfer_entry(self.adaptation, source, target, self.seed, settings, cls, cfg)

    def run(self, settings: RunSettings) -> dict:
        source, target, cls, cfg = self.parts()
        if cls is None:
            return run_target_supervised(source, target, self.seed, settings)
        return run_transfer_cell(cls, source, target, self.seed, settings, adaptation_cfg=cfg)

    def record_failure(self, settings: RunSettings, error: str) -> dict:
        source, target, cls, cfg = self.parts()
        return record_transfer_failure(self.adaptation, source, target, self.seed, settings, error, cls, cfg)


def _dataset(name: str, overrides: dict):
    cls = get_dataset(name)
    return cls(apply_overrides(cls.Config(), overrides.get(name, {}), name))


def run_pair(source_name: str, target_name: str, settings: RunSettings, adaptations=None,
             overrides: dict | None = None) -> list[dict]:
    """Run the pair's cells for every seed of `settings` (references first) and return their
    records (finished ones resumed). `adaptations`: names (default: every registered one);
    `overrides`: `--set` values by owner (dataset or adaptation name). The unfinished cells run
    as the grid's do (`bench.launch`): in this process with `settings.jobs` 1, else in local
    worker processes, each cell on `settings.threads` torch threads."""
    from bench import launch

    overrides = overrides or {}
    datasets = [_dataset(name, overrides) for name in (source_name, target_name)]
    for ds in datasets:
        why = ds.missing(settings.data_root)
        if why is not None:
            raise FileNotFoundError(why)
    names = list(all_adaptations()) if adaptations is None else list(adaptations)
    rows = [TARGET_SUPERVISED, SourceOnly.name] + [get_adaptation(n).name for n in names if n != SourceOnly.name]
    check_writable(settings.results_dir, "results folder")
    cells = [TransferCell(source_name, target_name, row, seed, overrides) for seed in settings.seeds for row in rows]
    records = {cell.label: cell.finished(settings) for cell in cells}
    todo = [cell for cell in cells if records[cell.label] is None]
    summaries = {}
    if todo:
        for ds in datasets:  # here, before any worker reads the data (the embedded pair is generated)
            ds.prepare(settings.data_root)
        # a cluster launcher's pair runs here, as before (its cells are short); the caller writes the tables
        jobs = 1 if settings.launcher != "inline" else (settings.jobs
                                                        or launch.auto_jobs(settings.torch_device, len(todo)))
        here = settings.replace(task_tables=False)
        ran = launch.run_inline(todo, here) if jobs == 1 else launch.run_local_pool(todo, here, jobs)
        summaries = {s["label"]: s for s in ran}
    for cell in todo:
        summary = summaries.get(cell.label, {})
        if summary.get("status") == "ok":
            path = transfer_result_path(settings.results_dir, source_name, target_name, cell.adaptation, cell.seed)
            records[cell.label] = json.loads(path.read_text())
        else:  # its failed entry (if it could write one) is on disk; this is what the caller reports
            records[cell.label] = {"method": cell.adaptation, "seed": cell.seed, "status": "failed",
                                   "error": summary.get("error")}
    return [records[cell.label] for cell in cells]


def pair_table(records: list[dict], metrics=("PxAP", "Top-1 Cls")) -> str:
    """A markdown table of one pair: source-only first, the adaptations, target-supervised
    last (lower and upper references), mean ± sample std over seeds, seconds per cell."""
    from bench.leaderboard import fmt_mean_std, mean_std

    rows: dict[str, list[dict]] = {}
    for r in records:
        rows.setdefault(r["method"], []).append(r)
    order = [SourceOnly.name] + sorted(n for n in rows if n not in (SourceOnly.name, TARGET_SUPERVISED)) \
        + [TARGET_SUPERVISED]
    body = []
    for name in order:
        ok = [r for r in rows.get(name, []) if r.get("status") == "ok"]
        label = name + {SourceOnly.name: " (lower reference)", TARGET_SUPERVISED: " (upper reference)"}.get(name, "")
        if not ok:
            body.append([label, *("failed" if rows.get(name) else "-" for _ in metrics), "-", 0])
            continue
        cells = [fmt_mean_std(mean_std([r["metrics"][m] for r in ok])) if all(m in r["metrics"] for r in ok) else "-"
                 for m in metrics]
        secs = sum(r["timings"]["total_s"] for r in ok) / len(ok)
        body.append([label, *cells, f"{secs:.1f}", len(ok)])
    return tabulate(body, headers=["adaptation", *metrics, "s/cell", "seeds"], tablefmt="github",
                    disable_numparse=True)
