"""Leaderboard tables from `leaderboard/results/**/*.json`, with the published numbers of
`leaderboard/reported.csv` shown beside them."""
from __future__ import annotations

import csv
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench.entries import (EntryError, Problem, ResultsFolderError, empty_folder_message, entry_files,
                           integrity_reasons, parse_entry)
from bench.io import atomic_write_text, results_lock
from bench.registry import REPO_ROOT

log = logging.getLogger(__name__)

REPORTED_CSV = REPO_ROOT / "leaderboard" / "reported.csv"
REPORTED_COLUMNS = ("method", "dataset", "metric", "backbone", "value", "paper")

# metrics shown per annotation kind, primary first
SHOWN = ("MaxBoxAccV2", "MaxBoxAcc", "Top-1 Loc", "Top-1 Cls", "PxAP", "Dice-fg", "mIoU", "CorLoc",
         "CorLoc-classmean")
SUBSET_PREFIX = "CorLoc-"  # CorLoc on a subset of a video dataset (e.g. CorLoc-slow), shown after SHOWN


def load_entries(results_dir: Path) -> tuple[list[dict], list[Problem]]:
    """(records, excluded) of a result folder: every entry that can be published, and one
    `Problem` per entry file that cannot (unreadable, malformed, or failing its integrity
    checks: another schema, a checksum mismatch from a hand edit, a config hash that is not its
    config's, a misplaced file). Staleness (a method file changed since) is `--check`'s."""
    results_dir = Path(results_dir)
    records, excluded = [], []
    for path in entry_files(results_dir):
        try:
            record = parse_entry(path)
        except EntryError as err:
            excluded.append(Problem(err.path, err.reason))
            continue
        reasons = integrity_reasons(record, path, results_dir)
        if reasons:
            excluded.append(Problem(str(path), "; ".join(reasons)))
            continue
        record["_path"] = str(path)
        records.append(record)
    for problem in excluded:
        log.warning("entry excluded from the tables: %s", problem)
    return records, excluded


def load_results(results_dir: Path) -> list[dict]:
    """The publishable entries of a result folder (see `load_entries`; the others are logged)."""
    return load_entries(results_dir)[0]


@dataclass(frozen=True)
class Reported:
    """One published number (a row of reported.csv)."""

    method: str
    dataset: str
    metric: str
    backbone: str
    value: float
    paper: str


def load_reported(path: Path = REPORTED_CSV) -> list[Reported]:
    """Read reported.csv strictly: the exact header, a number in [0, 100] and every field filled
    on each line (errors name file:line)."""
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != REPORTED_COLUMNS:
            raise ValueError(f"{path}:1: header must be {','.join(REPORTED_COLUMNS)}, got {header}")
        out = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(REPORTED_COLUMNS):
                raise ValueError(f"{path}:{line}: {len(row)} fields, expected {len(REPORTED_COLUMNS)}")
            fields = dict(zip(REPORTED_COLUMNS, (v.strip() for v in row)))
            empty = [k for k, v in fields.items() if not v]
            if empty:
                raise ValueError(f"{path}:{line}: empty {', '.join(empty)}")
            try:
                value = float(fields["value"])
            except ValueError:
                raise ValueError(f"{path}:{line}: value {fields['value']!r} is not a number") from None
            if not 0.0 <= value <= 100.0:
                raise ValueError(f"{path}:{line}: value {value} is not a percentage")
            out.append(Reported(**{**fields, "value": value}))
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def summarize(records: list[dict]) -> dict[str, list[dict]]:
    """One table per dataset and (budget, backbone): a row per method with mean/std over seeds,
    ranked by the primary metric (rows of stronger supervision after the others, unranked).
    A dataset with entries of one budget and backbone is keyed by its name alone, else by
    "<dataset> (budget B, backbone K)": rankings never mix budgets or backbones."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("status") == "ok":
            groups[(r["dataset"], r["budget"], r.get("backbone", ""), r["method"])].append(r)
    runs: dict[str, set] = defaultdict(set)
    for dataset, budget, backbone, _ in groups:
        runs[dataset].add((budget, backbone))
    tables: dict[str, list[dict]] = defaultdict(list)
    for (dataset, budget, backbone, method), rs in groups.items():
        key = dataset if len(runs[dataset]) == 1 else f"{dataset} (budget {budget}, backbone {backbone})"
        row = {"method": method, "dataset": dataset, "primary_metric": rs[0]["primary_metric"],
               "seeds": sorted(r["seed"] for r in rs), "budget": budget, "backbone": backbone,
               "supervision": rs[0].get("supervision", "weak"),
               "off_protocol": sorted({d for r in rs for d in (r.get("submission") or {}).get("deviations", [])}
                                      | ({"random init"} if any(r.get("random_init") for r in rs) else set()))}
        for metric in sorted({k for r in rs for k in r["metrics"]}):
            values = [r["metrics"][metric] for r in rs if isinstance(r["metrics"].get(metric), (int, float))]
            if values:
                row[metric] = mean_std(values)
        row["fit_s"] = sum(r["timings"].get("fit_s", 0) for r in rs) / len(rs)
        row["checkpoint"] = checkpoint_note(sorted(rs, key=lambda r: r["seed"]))
        tables[key].append(row)
    for rows in tables.values():
        rows.sort(key=lambda row: (row["supervision"] != "weak", -row.get(row["primary_metric"], (-1e9, 0))[0]))
    return dict(sorted(tables.items()))


def checkpoint_note(records: list[dict]) -> str:
    """Which checkpoint the rows' entries kept (docs/protocol.md, "Model selection"): per
    training run its criterion and, when validated, the epoch kept per seed over the run's
    epochs, e.g. "best-loc 3,4,4/4; stage-1 best-loc 7,8,6/8". Empty for entries without it."""
    runs: dict[str, dict] = {}
    for r in records:
        sel = r.get("selection") or {}
        found = [("", sel["method"])] if isinstance(sel.get("method"), dict) else []
        found += [("stage-1 ", v) for v in (sel.get("stage1") or {}).values() if isinstance(v, dict)]
        for prefix, run in found:
            label = f"{prefix}{run.get('criterion', '?')}"
            entry = runs.setdefault(label, {"epochs": [], "of": set()})
            if run.get("criterion") != "last" and run.get("epoch") is not None:
                entry["epochs"].append(str(run["epoch"]))
                entry["of"].add(str(run.get("epochs")))
    parts = []
    for label, entry in runs.items():
        kept = f" {','.join(entry['epochs'])}/{'|'.join(sorted(entry['of']))}" if entry["epochs"] else ""
        parts.append(label + kept)
    return "; ".join(parts)


def fmt_mean_std(pair) -> str:
    return "" if pair is None else f"{pair[0]:.1f} ± {pair[1]:.1f}"


def _label(row: dict) -> str:
    """Method name, marked when its entries were submitted off the protocol (tests, smoke)."""
    if row.get("off_protocol"):
        return f"{row['method']} (off-protocol: {'; '.join(row['off_protocol'])})"
    return row["method"]


def _reported_table(reported: list[Reported], rows: list[dict] | None) -> str:
    """Published numbers, each beside this leaderboard's mean for the same method and metric."""
    ours = {row["method"]: row for row in rows or []}
    body = []
    for r in sorted(reported, key=lambda r: (r.metric, r.method, r.backbone)):
        here = ours.get(r.method, {}).get(r.metric)
        here_text = f"{fmt_mean_std(here)} ({ours[r.method]['backbone']})" if here else "-"
        body.append([f"{r.method} (reported)", r.metric, r.backbone, f"{r.value:.1f}", here_text, r.paper])
    return tabulate(body, headers=["method", "metric", "backbone", "reported", "here", "paper"], tablefmt="github",
                    disable_numparse=True)


def _transfer_sections(records: list[dict]) -> list[str]:
    """The transfer track: a table per (source, target) pair, source-only first (the lower
    reference), the adaptations, target-supervised last (the upper reference)."""
    if not records:
        return []
    from bench.transfer.track import pair_table

    lines = ["## Transfer: source-free domain adaptation", "",
             "A source model (the stage-1 CAM classifier of the source dataset) adapted on the target's unlabelled "
             "training images, scored on the target's test split; mean ± sample std over seeds.", ""]
    pairs = sorted({(r["source"], r["target"]) for r in records})
    for source, target in pairs:
        mine = [r for r in records if (r["source"], r["target"]) == (source, target)]
        metrics = [mine[0]["primary_metric"], "Top-1 Cls"]
        lines += [f"### {source} -> {target}", "", pair_table(mine, metrics), ""]
    return lines


def render_markdown(records: list[dict], reported: list[Reported] | None = None,
                    transfer: list[dict] | None = None) -> str:
    tables = summarize(records)
    reported = reported or []
    ok = [r for r in records if r.get("status") == "ok"]
    stamp = lambda key: ", ".join(sorted({str(r.get(key)) for r in ok})) or "n/a"
    dates = sorted(r.get("finished_at", "") for r in ok)
    lines = [
        "# wsolbench leaderboard", "",
        "Generated by `python -m bench leaderboard` from `leaderboard/results/` (one JSON per cell); "
        "do not edit by hand.", "",
        f"- budget: {stamp('budget')}",
        f"- seeds: {', '.join(str(s) for s in sorted({r['seed'] for r in ok})) or 'n/a'} (mean ± sample std over seeds)",
        f"- backbone: {stamp('backbone')}",
        f"- device: {stamp('device')}",
        f"- torch: {stamp('torch')}; extension: {stamp('extension')}",
        f"- date: {dates[0][:10] if dates else 'n/a'} to {dates[-1][:10] if dates else 'n/a'}",
        "",
    ]
    for dataset, rows in tables.items():
        primary = rows[0]["primary_metric"]
        present = [m for m in SHOWN if any(m in row for row in rows)]
        subsets = [m for r in records if r.get("dataset") == dataset for m in r.get("metrics", {})
                   if m.startswith(SUBSET_PREFIX) and m not in SHOWN]
        present += list(dict.fromkeys(subsets))  # in the evaluator's order
        metrics = [primary] + [m for m in present if m != primary]
        weak = [row for row in rows if row["supervision"] == "weak"]
        stronger = [row for row in rows if row["supervision"] != "weak"]

        def body(part, ranked):
            return [[rank if ranked else "-", _label(row), *(fmt_mean_std(row.get(m)) for m in metrics),
                     len(row["seeds"]), f"{row['fit_s']:.1f}", row["checkpoint"]]
                    for rank, row in enumerate(part, start=1)]

        headers = ["#", "method", *metrics, "seeds", "fit s", "checkpoint"]
        lines += [f"## {dataset}", "", f"Ranked by {primary} (%). Checkpoint: the criterion each training run kept "
                  "(and the epoch kept per seed / the run's epochs).", "",
                  tabulate(body(weak, True), headers=headers, tablefmt="github", disable_numparse=True), ""]
        if stronger:
            lines += ["Stronger supervision (references, not ranked with the weakly supervised methods above: "
                      + "; ".join(f"{row['method']}: {row['supervision']}" for row in stronger) + "):", "",
                      tabulate(body(stronger, False), headers=headers, tablefmt="github", disable_numparse=True), ""]
        dataset = rows[0]["dataset"]
        mine = [r for r in reported if r.dataset == dataset]
        if mine:
            lines += [f"Reported in papers for {dataset} (published numbers, not reproduced by this harness; "
                      "\"here\" is this table's mean for the same method and metric):", "", _reported_table(mine, rows), ""]
    lines += _transfer_sections(transfer or [])
    elsewhere = sorted({r.dataset for r in reported} - {row["dataset"] for rows in tables.values() for row in rows})
    if elsewhere:
        lines += ["## Reported in papers (datasets without results here)", "",
                  "Published numbers from `leaderboard/reported.csv`, not reproduced by this harness.", ""]
        for dataset in elsewhere:
            lines += [f"### {dataset}", "", _reported_table([r for r in reported if r.dataset == dataset], None), ""]
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        lines += ["## Failed cells", ""]
        lines += [f"- {r['dataset']}/{r['method']}/seed{r['seed']}: {r.get('error')}" for r in failed]
        lines.append("")
    return "\n".join(lines)


def to_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        row = {"dataset": r["dataset"], "method": r["method"], "seed": r["seed"], "budget": r["budget"],
               "backbone": r.get("backbone"), "status": r["status"], "config_hash": r["config_hash"],
               "device": r.get("device"), "finished_at": r.get("finished_at")}
        row.update({k: v for k, v in r.get("metrics", {}).items() if isinstance(v, (int, float))})
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["dataset", "method", "seed"]) if rows else pd.DataFrame()


@dataclass(frozen=True)
class Published:
    """What `write_leaderboard` wrote, and the entries it left out. Unpacks as (readme, table)."""

    readme: Path
    table: Path
    excluded: list[Problem]

    def __iter__(self):
        return iter((self.readme, self.table))


def write_leaderboard(results_dir: Path, out_dir: Path, reported: Path | None = REPORTED_CSV,
                      allow_empty: bool = False) -> Published:
    """Regenerate README.md and results.csv in `out_dir` from every publishable entry in
    `results_dir`; entries that fail their integrity checks are left out, each with a warning,
    and returned in `.excluded`. Holds the result folder's lock from reading the entries to the
    last table write, so tables written by concurrent runs are never older than the entries
    finished before they started.

    A missing result folder, or one without a publishable entry, raises `ResultsFolderError`
    unless `allow_empty`: a mistyped --results never replaces the tables with empty ones."""
    published = load_reported(reported) if reported is not None and Path(reported).is_file() else []
    readme, table = Path(out_dir) / "README.md", Path(out_dir) / "results.csv"
    if not allow_empty:
        entry_files(results_dir)  # a missing folder fails before its lock file would create it
    from bench.transfer.entries import load_transfer_entries

    with results_lock(results_dir):
        records, excluded = load_entries(results_dir)
        transfer, transfer_excluded = load_transfer_entries(results_dir)
        excluded += transfer_excluded
        if not records and not transfer and not allow_empty:
            raise ResultsFolderError(empty_folder_message(results_dir) if not excluded else
                                     f"no entry of {results_dir} can be published ({len(excluded)} excluded); "
                                     f"the tables are left as they were")
        atomic_write_text(readme, render_markdown(records, published, transfer))
        atomic_write_text(table, to_frame(records).to_csv(index=False, float_format="%.4f"))
    return Published(readme, table, excluded)
