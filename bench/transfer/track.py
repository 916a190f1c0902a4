"""A transfer pair end to end: its two reference rows and every adaptation, for some seeds
(what `python -m bench run --transfer SRC:TGT` is meant to run), and the pair's table."""
from __future__ import annotations

from pathlib import Path

import torch

from bench.config import Budget, apply_overrides
from bench.registry import get_dataset
from bench.transfer.adaptation import SourceOnly, all_adaptations, get_adaptation
from bench.transfer.cell import TARGET_SUPERVISED, run_target_supervised, run_transfer_cell


def parse_pair(text: str) -> tuple[str, str]:
    """"SRC:TGT" -> (SRC, TGT)."""
    source, sep, target = text.partition(":")
    if not sep or not source or not target:
        raise ValueError(f"--transfer {text!r}: expected SOURCE:TARGET (e.g. synth-tissue:synth-tissue-shifted)")
    return source, target


def run_pair(source_name: str, target_name: str, *, seeds, budget: Budget, data_root: Path, results_dir: Path,
             cache_dir: Path, device: torch.device, adaptations=None, backbone: str = "small-cnn", weights=None,
             overrides: dict | None = None, resume: bool = True) -> list[dict]:
    """Run the pair's cells (references first) and return their records. `adaptations`:
    names (default: every registered one); `overrides`: `--set` values by owner (dataset or
    adaptation name)."""
    overrides = overrides or {}
    datasets = []
    for name in (source_name, target_name):
        cls = get_dataset(name)
        ds = cls(apply_overrides(cls.Config(), overrides.get(name, {}), name))
        why = ds.missing(data_root)
        if why is not None:
            raise FileNotFoundError(why)
        ds.prepare(data_root)
        datasets.append(ds)
    source, target = datasets
    names = list(all_adaptations()) if adaptations is None else list(adaptations)
    classes = [SourceOnly] + [get_adaptation(n) for n in names if n != SourceOnly.name]
    common = dict(budget=budget, data_root=data_root, results_dir=results_dir, cache_dir=cache_dir, device=device,
                  backbone=backbone, weights=weights, resume=resume)
    records = []
    for seed in seeds:
        records.append(run_target_supervised(source, target, seed, **common))
        for cls in classes:
            cfg = apply_overrides(cls.Config(), overrides.get(cls.name, {}), cls.name)
            records.append(run_transfer_cell(cls, source, target, seed, adaptation_cfg=cfg, **common))
    return records


def pair_table(records: list[dict], metrics=("PxAP", "Top-1 Cls")) -> str:
    """A markdown table of one pair: source-only first, the adaptations, target-supervised
    last (lower and upper references), mean over seeds, seconds per cell."""
    rows: dict[str, list[dict]] = {}
    for r in records:
        rows.setdefault(r["method"], []).append(r)
    order = [SourceOnly.name] + sorted(n for n in rows if n not in (SourceOnly.name, TARGET_SUPERVISED)) \
        + [TARGET_SUPERVISED]
    lines = ["| adaptation | " + " | ".join(metrics) + " | s/cell | seeds |",
             "|---|" + "---|" * (len(metrics) + 2)]
    for name in order:
        ok = [r for r in rows.get(name, []) if r.get("status") == "ok"]
        if not ok:
            cell = "failed" if rows.get(name) else "-"
            lines.append(f"| {name} | " + " | ".join(cell for _ in metrics) + " | - | 0 |")
            continue
        vals = [sum(r["metrics"][m] for r in ok) / len(ok) if all(m in r["metrics"] for r in ok) else float("nan")
                for m in metrics]
        secs = sum(r["timings"]["total_s"] for r in ok) / len(ok)
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {secs:.1f} | {len(ok)} |")
    return "\n".join(lines)
