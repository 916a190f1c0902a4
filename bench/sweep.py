"""`python -m bench sweep`: one setting of a method or a dataset tried at several values, each
value a grid of seeds in its own result folder, and the value chosen on the validation split.

Test metrics are shown beside the validation ones but never choose: a default picked on test
numbers would report them optimistically. The tables (`README.md` of the sweep folder) are
regenerated from the entries on every call, so a rerun resumes finished cells and rewrites them.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from bench.config import Budget, apply_overrides, setting_names, split_setting
from bench.io import atomic_write_text
from bench.leaderboard import fmt_mean_std, load_results, mean_std
from bench.registry import all_datasets, all_methods, get_dataset

_VALUE = re.compile(r"^[A-Za-z0-9_.+-]+$")  # a value names its result folder


@dataclass(frozen=True)
class SweepParam:
    owner: str  # a method or dataset name
    key: str  # one of its config fields
    values: tuple[str, ...]  # as given; typed by the field when applied (bench.config.apply_overrides)

    def folder(self, value: str) -> str:
        return f"{self.key}={value}"

    def owner_config(self):
        """The owner's configuration as it is by default (a method or dataset `Config()`)."""
        return (all_methods().get(self.owner) or all_datasets()[self.owner]).Config()

    def default(self):
        return _dotted(self.owner_config(), self.key)

    def typed(self, value: str):
        """`value` as the setting's type, as `--set` would read it."""
        return _dotted(apply_overrides(self.owner_config(), {self.key: value}, self.owner), self.key)


def _dotted(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def parse_param(text: str) -> SweepParam:
    """`colocam.joint_weight=0,0.01,1` -> SweepParam("colocam", "joint_weight", ("0", "0.01", "1"))."""
    parts = split_setting(text)
    if parts is None:
        raise ValueError(f"sweep {text!r}: expected OWNER.KEY=V1,V2,... (e.g. colocam.joint_weight=0,0.01,1)")
    owner, name, values = parts
    cls = all_methods().get(owner) or all_datasets().get(owner)
    if cls is None:
        raise ValueError(f"sweep {text!r}: {owner!r} is neither a method nor a dataset")
    names = setting_names(cls.Config())
    if name not in names:
        raise ValueError(f"sweep {text!r}: {owner} has no setting {name!r}; its settings: {', '.join(names)}")
    vals = tuple(v.strip() for v in values.split(",") if v.strip())
    if len(vals) < 2:
        raise ValueError(f"sweep {text!r}: give at least two values, comma-separated")
    if len(set(vals)) != len(vals):
        raise ValueError(f"sweep {text!r}: a value is repeated")
    bad = [v for v in vals if not _VALUE.match(v)]
    if bad:
        raise ValueError(f"sweep {text!r}: value(s) {', '.join(map(repr, bad))} cannot name a folder "
                         f"(letters, digits and _ . + - only)")
    return SweepParam(owner, name, vals)


@dataclass
class SweepRow:
    dataset: str
    method: str
    value: str
    seeds: list[int]
    val: tuple[float, float] | None  # mean, std over seeds of the primary metric on validation
    test: dict[str, tuple[float, float]]  # metric -> mean, std on test
    failed: int
    chosen: bool = False


def summarize_sweep(param: SweepParam, out: Path, seeds) -> list[SweepRow]:
    """One row per (dataset, method, value) from the entries of the requested seeds under `out`;
    per (dataset, method), the value of the best mean validation primary metric is `chosen`
    (every metric here is higher-better; a tie goes to the value listed first). Values whose
    entries lack validation metrics or miss a seed are never chosen."""
    rows: list[SweepRow] = []
    for value in param.values:
        groups: dict[tuple[str, str], list[dict]] = {}
        for r in load_results(out / param.folder(value)):
            if r.get("seed") in seeds:
                groups.setdefault((r["dataset"], r["method"]), []).append(r)
        for (dataset, method), rs in sorted(groups.items()):
            ok = [r for r in rs if r.get("status") == "ok"]
            primary = rs[0]["primary_metric"]
            vals = [r["val_metrics"][primary] for r in ok if primary in (r.get("val_metrics") or {})]
            complete = len(vals) == len(ok) == len(seeds)
            test = {m: mean_std([r["metrics"][m] for r in ok]) for m in (ok[0]["metrics"] if ok else {})
                    if all(isinstance(r["metrics"].get(m), (int, float)) for r in ok)}
            rows.append(SweepRow(dataset, method, value, sorted(r["seed"] for r in ok),
                                 mean_std(vals) if complete else None, test, len(rs) - len(ok)))
    for key in {(r.dataset, r.method) for r in rows}:
        candidates = [r for r in rows if (r.dataset, r.method) == key and r.val is not None]
        if candidates:
            max(candidates, key=lambda r: r.val[0]).chosen = True  # max keeps the first of equals
    return rows


def render_sweep(param: SweepParam, rows: list[SweepRow], budget: Budget, seeds, default, device: str,
                 command: str) -> str:
    lines = [f"# Sweep of {param.owner}.{param.key}", "",
             f"Generated by `{command}`; do not edit by hand. One result folder per value "
             f"(`{param.key}=<value>/`). The value is chosen on the validation split's primary metric "
             "(mean over seeds); test metrics are shown, never used to choose.", "",
             f"- values: {', '.join(param.values)} (default now: {default})",
             f"- budget: {budget.name}; seeds: {', '.join(map(str, seeds))} (mean ± sample std over seeds)",
             f"- device: {device}",
             f"- date: {_dt.date.today().isoformat()}", ""]
    for dataset, method in sorted({(r.dataset, r.method) for r in rows}):
        mine = [r for r in rows if (r.dataset, r.method) == (dataset, method)]
        ds = get_dataset(dataset)
        primary = ds.primary_metric
        shown = [primary] + [m for m in ds.metrics if m != primary]
        # the primary metric's variants (CorLoc-slow, ...) in the evaluator's order
        shown += list(dict.fromkeys(m for r in mine for m in r.test if m.startswith(primary + "-") and m not in shown))
        body = [[f"**{r.value}**" if r.chosen else r.value, fmt_mean_std(r.val) or "-",
                 *(fmt_mean_std(r.test.get(m)) or "-" for m in shown), len(r.seeds), r.failed or ""] for r in mine]
        chosen = next((r.value for r in mine if r.chosen), None)
        lines += [f"## {method} on {dataset}", "",
                  f"Chosen: **{chosen}**." if chosen else "Nothing chosen: no value has validation metrics on every seed.",
                  "", tabulate(body, headers=[param.key, f"val {primary}", *(f"test {m}" for m in shown), "seeds",
                                              "failed"], tablefmt="github", disable_numparse=True), ""]
    return "\n".join(lines)


def write_sweep(param: SweepParam, out: Path, budget: Budget, seeds, default, device: str, command: str) -> tuple[Path, list[SweepRow]]:
    rows = summarize_sweep(param, out, seeds)
    readme = Path(out) / "README.md"
    atomic_write_text(readme, render_sweep(param, rows, budget, seeds, default, device, command))
    return readme, rows
