"""`python -m bench {list,run,leaderboard,data,profile}`."""
from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import sys
from pathlib import Path

import torch

from bench.registry import REPO_ROOT, UnknownNameError

log = logging.getLogger("bench")


def _default_data_root() -> Path:
    return Path(os.environ.get("WSOLBENCH_DATA", Path.home() / ".cache" / "wsolbench" / "data"))


def _default_cache_dir() -> Path:
    return Path(os.environ.get("WSOLBENCH_CACHE", Path.home() / ".cache" / "wsolbench" / "cache"))


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is visible to torch {torch.__version__}")
    return device


def cmd_list(args) -> int:
    from tabulate import tabulate

    from bench.registry import all_datasets, all_methods

    methods, datasets = all_methods(), all_datasets()
    print("Methods:")
    print(tabulate([[m.name, ",".join(m.tasks), ",".join(m.needs) or "-", (m.__doc__ or "").strip().splitlines()[0]
                     if m.__doc__ else ""] for m in methods.values()], headers=["name", "tasks", "needs", "about"]))
    print("\nDatasets:")
    rows = []
    for d in datasets.values():
        ds = d()
        where = "embedded (generated)" if d.synthetic else (ds.missing(args.data_root) or f"found in {args.data_root}")
        rows.append([d.name, d.task, d.annotation, d.primary_metric, where])
    print(tabulate(rows, headers=["name", "task", "annotation", "primary metric", "data"]))
    print("\nPairs:")
    pairs = []
    for d in datasets.values():
        for m in methods.values():
            why = m.skip(d())
            pairs.append([m.name, d.name, "yes" if why is None else f"no: {why}"])
    print(tabulate(pairs, headers=["method", "dataset", "compatible"]))
    return 0


def cmd_run(args) -> int:
    from bench.config import get_budget, parse_set_flags
    from bench.grid import DEFAULT_SEEDS, build_cells, run_grid
    from bench.leaderboard import write_leaderboard

    if not args.all and not args.methods and not args.datasets:
        raise ValueError("say what to run: --all, or --methods and/or --datasets")
    budget = get_budget(args.budget)
    seeds = [int(s) for s in _csv(args.seeds)] if args.seeds else list(DEFAULT_SEEDS)
    device = _device(args.device)
    cells, skipped = build_cells(_csv(args.methods), _csv(args.datasets), seeds, budget, args.data_root,
                                 parse_set_flags(args.set))
    for what, why in skipped:
        print(f"skip {what}: {why}")
    print(f"{len(cells)} cells, budget {budget.name}, device {device}, seeds {seeds}")
    report = run_grid(cells, budget, data_root=args.data_root, results_dir=args.results, cache_dir=args.cache_dir,
                      device=device, backbone=args.backbone, weights=args.weights)
    readme, _ = write_leaderboard(args.results, args.results.parent)
    print(f"ran {len(report.ran)}, resumed {len(report.resumed)}, failed {len(report.failed)}; tables in {readme}")
    for label in report.failed:
        print(f"FAILED {label} (see its JSON result for the error)")
    return 1 if report.failed else 0


def cmd_leaderboard(args) -> int:
    from bench.leaderboard import write_leaderboard

    readme, csv = write_leaderboard(args.results, args.out or args.results.parent)
    print(f"wrote {readme} and {csv}")
    return 0


def cmd_data(args) -> int:
    from bench.registry import all_datasets, get_dataset

    if args.data_command == "prepare":
        names = _csv(args.dataset) or [n for n, d in all_datasets().items() if d.synthetic]
        for name in names:
            get_dataset(name)().prepare(args.root)
            print(f"{name}: ready under {args.root}")
        return 0
    raise ValueError(f"unknown data command {args.data_command!r}")


def cmd_profile(args) -> int:
    from tabulate import tabulate

    from bench.profiling import load_profiles

    profiles = load_profiles()
    ops = _csv(args.op) or sorted(profiles)
    unknown = [o for o in ops if o not in profiles]
    if unknown:
        raise UnknownNameError(f"unknown profile {', '.join(unknown)}; known profiles: {', '.join(sorted(profiles))}")
    device = _device(args.device)
    sections = []
    for op in ops:
        for table in profiles[op](device, args.size):
            text = tabulate(table.rows, headers="keys", tablefmt="github", floatfmt=".3f")
            notes = "".join(f"\n- {n}" for n in table.notes)
            sections.append(f"### {table.title}\n\n{text}\n{notes}\n")
            print(sections[-1])
    if args.write:
        stamp = (f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; "
                 f"torch {torch.__version__}; CUDA {torch.version.cuda}; "
                 f"date {_dt.date.today().isoformat()}; size {args.size}")
        from bench.io import atomic_write_text

        atomic_write_text(args.write, f"# Kernel speed tables\n\nWritten by `python -m bench profile "
                                      f"--device {device.type} --write {args.write}`.\n\n{stamp}\n\n" + "\n".join(sections))
        print(f"wrote {args.write}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="methods, datasets and compatible pairs")
    p.add_argument("--data-root", type=Path, default=_default_data_root())
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run the grid of methods x datasets x seeds (resumable)")
    p.add_argument("--all", action="store_true", help="every registered method on every available dataset")
    p.add_argument("--methods", help="comma-separated method names")
    p.add_argument("--datasets", help="comma-separated dataset names")
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--budget", default="quick", help="smoke | quick | paper (default quick)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when visible, else cpu)")
    p.add_argument("--backbone", default="small-cnn")
    p.add_argument("--weights", help="local backbone weights file (torchvision state-dict layout)")
    p.add_argument("--data-root", type=Path, default=_default_data_root(),
                   help="where datasets live and the synthetic suite is generated (env WSOLBENCH_DATA)")
    p.add_argument("--results", type=Path, default=REPO_ROOT / "leaderboard" / "results",
                   help="result folder; tables are written beside it")
    p.add_argument("--cache-dir", type=Path, default=_default_cache_dir(), help="stage-1 classifier cache")
    p.add_argument("--set", action="append", default=[], metavar="OWNER.KEY=VALUE",
                   help="override a method or dataset setting, e.g. --set synth-objects.image_size=64")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("leaderboard", help="regenerate leaderboard/README.md and results.csv")
    p.add_argument("--results", type=Path, default=REPO_ROOT / "leaderboard" / "results")
    p.add_argument("--out", type=Path, help="output folder (default: beside --results)")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("prepare", help="generate the embedded synthetic suite")
    q.add_argument("--dataset", help="comma-separated names (default: every synthetic dataset)")
    q.add_argument("--root", type=Path, default=_default_data_root())
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("profile", help="kernel speed tables")
    p.add_argument("--op", help="comma-separated profiles (default: all)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when visible)")
    p.add_argument("--size", default="full", choices=("full", "small"))
    p.add_argument("--write", type=Path, help="write the tables to this markdown file (e.g. leaderboard/kernels.md)")
    p.set_defaults(func=cmd_profile)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: finished cells are saved; rerun the same command to resume", file=sys.stderr)
        return 130
    except (UnknownNameError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
