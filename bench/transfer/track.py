"""A transfer pair end to end: its two reference rows and every adaptation, for some seeds
(what `python -m bench run --transfer SRC:TGT` is meant to run), and the pair's table."""
from __future__ import annotations

from tabulate import tabulate
from tqdm.auto import tqdm

from bench.config import apply_overrides
from bench.io import check_writable
from bench.registry import get_dataset
from bench.settings import RunSettings
from bench.transfer.adaptation import SourceOnly, all_adaptations, get_adaptation
from bench.transfer.cell import TARGET_SUPERVISED, run_target_supervised, run_transfer_cell


def parse_pair(text: str) -> tuple[str, str]:
    """"SRC:TGT" -> (SRC, TGT)."""
    source, sep, target = text.partition(":")
    if not sep or not source or not target:
        raise ValueError(f"--transfer {text!r}: expected SOURCE:TARGET (e.g. synth-tissue:synth-tissue-shifted)")
    return source, target


def run_pair(source_name: str, target_name: str, settings: RunSettings, adaptations=None,
             overrides: dict | None = None) -> list[dict]:
    """Run the pair's cells for every seed of `settings` (references first) and return their
    records (finished ones resumed). `adaptations`: names (default: every registered one);
    `overrides`: `--set` values by owner (dataset or adaptation name)."""
    overrides = overrides or {}
    datasets = []
    for name in (source_name, target_name):
        cls = get_dataset(name)
        ds = cls(apply_overrides(cls.Config(), overrides.get(name, {}), name))
        why = ds.missing(settings.data_root)
        if why is not None:
            raise FileNotFoundError(why)
        ds.prepare(settings.data_root)
        datasets.append(ds)
    source, target = datasets
    names = list(all_adaptations()) if adaptations is None else list(adaptations)
    classes = [SourceOnly] + [get_adaptation(n) for n in names if n != SourceOnly.name]
    configs = [apply_overrides(cls.Config(), overrides.get(cls.name, {}), cls.name) for cls in classes]
    check_writable(settings.results_dir, "results folder")
    records = []
    with tqdm(total=len(settings.seeds) * (len(classes) + 1), desc=f"transfer {source_name}->{target_name}",
              unit="cell", dynamic_ncols=True) as bar:
        for seed in settings.seeds:
            records.append(run_target_supervised(source, target, seed, settings))
            bar.update(1)
            for cls, cfg in zip(classes, configs):
                bar.set_postfix_str(f"{cls.name}/seed{seed}")
                records.append(run_transfer_cell(cls, source, target, seed, settings, adaptation_cfg=cfg))
                bar.update(1)
    return records


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
