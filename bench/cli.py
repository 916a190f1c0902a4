"""`python -m bench {list,run,sweep,submit,leaderboard,report,data,profile}`."""
from __future__ import annotations

import argparse
import dataclasses
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
    device = _device_name(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is visible to torch {torch.__version__}")
    return device


def _device_name(name: str) -> torch.device:
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: not a device (cpu, cuda, cuda:1)") from None


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
    from bench.registry import plugin_failures
    from bench.transfer import TRANSFER_PAIRS, all_adaptations

    if plugin_failures():
        print("\nPlugin files that failed to import (left out):")
        for failure in plugin_failures():
            print(f"  {failure}")

    print("\nAdaptations (run --transfer SRC:TGT):")
    print(tabulate([[a.name, (a.__doc__ or "").strip().splitlines()[0] if a.__doc__ else ""]
                    for a in all_adaptations().values()], headers=["name", "about"]))
    print("\nTransfer pairs (run --all runs those on disk): "
          + ", ".join(f"{s}:{t}" for s, t in TRANSFER_PAIRS))
    return 0


def cmd_run(args) -> int:
    from bench.config import parse_set_flags
    from bench.grid import build_cells, run_grid
    from bench.leaderboard import write_leaderboard

    if not args.all and not args.methods and not args.datasets and not args.transfer:
        raise ValueError("say what to run: --all, or --methods and/or --datasets, or --transfer SRC:TGT")
    from bench.transfer import all_adaptations

    settings = run_settings(args)
    overrides = parse_set_flags(args.set)
    adaptation_sets = {o: kv for o, kv in overrides.items() if o in all_adaptations()}
    overrides = {o: kv for o, kv in overrides.items() if o not in adaptation_sets}
    pairs = _transfer_pairs(args, settings)  # before any cell: a bad pair is an error now, not after the grid
    report = None
    if args.all or args.methods or args.datasets:
        cells, skipped = build_cells(_csv(args.methods), _csv(args.datasets), settings, overrides)
        for what, why in skipped:
            print(f"skip {what}: {why}")
        _refuse_random_init(cells, settings)
        print(f"{len(cells)} cells, {_describe(settings)}")
        report = run_grid(cells, settings)
    transfer_failed = _run_transfer(pairs, settings, args, {**overrides, **adaptation_sets})
    # allow_empty: a --no-wait job array has written nothing yet
    readme, _ = write_leaderboard(settings.results_dir, settings.results_dir.parent, allow_empty=True)
    if report is None:
        print(f"tables in {readme}")
        return 1 if transfer_failed else 0
    print(f"ran {len(report.ran)}, resumed {len(report.resumed)}, failed {len(report.failed)}"
          + (f", submitted {len(report.submitted)}" if report.submitted else "") + f"; tables in {readme}")
    if report.submitted:
        print(f"submitted {len(report.submitted)} cells as a job array; each task writes its entry and regenerates "
              f"the tables. Rerun the same command after the array ended to resubmit unfinished cells.")
    for label in report.failed:
        print(f"FAILED {label} (see its JSON result for the error)")
    return 1 if report.failed or transfer_failed else 0


def _transfer_pairs(args, settings) -> list[tuple[str, str]]:
    """The transfer pairs to run: each --transfer SRC:TGT, and with --all every declared pair
    whose datasets are on disk (the others skipped with one line)."""
    from bench.registry import get_dataset
    from bench.transfer import TRANSFER_PAIRS
    from bench.transfer.track import parse_pair

    pairs = [parse_pair(text) for text in args.transfer]
    for pair in pairs:
        for name in pair:
            get_dataset(name)  # unknown names fail here
    if args.all and not args.methods and not args.datasets:
        for pair in TRANSFER_PAIRS:
            missing = [why for why in (get_dataset(n)().missing(settings.data_root) for n in pair) if why]
            if missing:
                print(f"skip transfer {pair[0]}:{pair[1]}: {missing[0]}")
            elif pair not in pairs:
                pairs.append(pair)
    return pairs


def _run_transfer(pairs, settings, args, overrides) -> list[str]:
    """Run the transfer pairs; the labels of their failed cells."""
    from bench.transfer.track import run_pair

    failed = []
    adaptations = _csv(args.adaptations)
    for source, target in pairs:
        records = run_pair(source, target, settings, adaptations, overrides)
        bad = [f"transfer/{source}__{target}/{r['method']}/seed{r['seed']}" for r in records if r["status"] != "ok"]
        print(f"transfer {source} -> {target}: {len(records) - len(bad)} cells ok, {len(bad)} failed")
        for label in bad:
            print(f"FAILED {label} (see its JSON result for the error)")
        failed += bad
    return failed


def _refuse_random_init(cells, settings) -> None:
    """Stop before any cell starts when one would run the paper budget without its weights."""
    from bench.runner import random_init_refusal

    for cell in cells:
        refusal = random_init_refusal(cell.build(settings.budget.name)[2], settings)
        if refusal:
            raise ValueError(refusal)


def cmd_weights(args) -> int:
    from bench.models import check_weights

    if not args.weights_dir:
        raise ValueError("bench weights check: say where the weights are (--weights-dir DIR or $WSOLBENCH_WEIGHTS)")
    lines, bad = check_weights(args.weights_dir, _csv(args.backbone))
    print(f"weights folder {args.weights_dir}:")
    for line in lines:
        print(f"  {line}")
    return 1 if bad else 0


def run_settings(args, **changes):
    """The one `RunSettings` of a command, from its flags (the run, sweep and submit flags)."""
    from bench.config import get_budget
    from bench.launch import default_cell_threads
    from bench.settings import DEFAULT_SEEDS, RunSettings

    slurm = _slurm_config(args)
    device = _cell_device(args, slurm)
    threads = args.threads
    if threads is None and args.launcher == "inline":
        threads = default_cell_threads(device)
    fields = dict(budget=get_budget(args.budget), seeds=_seeds(args.seeds) if args.seeds else DEFAULT_SEEDS,
                  data_root=args.data_root, results_dir=args.results, cache_dir=args.cache_dir, device=str(device),
                  backbone=args.backbone, weights=args.weights, weights_dir=args.weights_dir,
                  random_init=args.random_init, threads=threads, jobs=args.jobs,
                  launcher=args.launcher, slurm=slurm, wait=args.wait, overwrite=args.overwrite,
                  val_metrics=getattr(args, "val_metrics", False))
    fields.update(changes)
    return RunSettings(**fields)


def _seeds(text: str) -> tuple[int, ...]:
    seeds = []
    for part in _csv(text) or []:
        try:
            seeds.append(int(part))
        except ValueError:
            raise ValueError(f"--seeds {text!r}: {part!r} is not an integer (e.g. --seeds 0,1,2)") from None
    return tuple(seeds)


def _describe(settings) -> str:
    where = (f"{settings.jobs or 'auto'} local workers" if settings.launcher == "inline"
             else f"launcher {settings.launcher}")
    return (f"budget {settings.budget.name}, device {settings.device}, seeds {list(settings.seeds)}, {where}"
            + (f", torch threads per cell: {settings.threads}" if settings.threads else ""))


def cmd_sweep(args) -> int:
    from bench.config import parse_set_flags
    from bench.grid import build_cells, run_grid
    from bench.registry import all_datasets, all_methods
    from bench.sweep import parse_param, write_sweep

    param = parse_param(args.param)
    fixed = parse_set_flags(args.set)
    if param.key in fixed.get(param.owner, {}):
        raise ValueError(f"--set {param.owner}.{param.key} fixes the setting this sweep varies")
    methods = _csv(args.methods) or ([param.owner] if param.owner in all_methods() else None)
    datasets = _csv(args.datasets) or ([param.owner] if param.owner in all_datasets() else None)
    out = Path(args.out or REPO_ROOT / "leaderboard" / "sweeps" / f"{param.owner}.{param.key}")
    # the folder above the values' results holds the sweep's table: tasks write none there
    settings = run_settings(args, results_dir=out, task_tables=False, val_metrics=True)
    if settings.slurm is not None and not settings.slurm.log_dir:
        settings = settings.replace(slurm=dataclasses.replace(settings.slurm, log_dir=str(out / "submitit")))
    cells = []
    for value in param.values:  # every value's cells in one grid (one pool, one job array), each in its own folder
        overrides = {owner: dict(kv) for owner, kv in fixed.items()}
        overrides.setdefault(param.owner, {})[param.key] = value
        value_cells, skipped = build_cells(methods, datasets, settings, overrides)
        for what, why in skipped if value == param.values[0] else ():  # the same for every value
            print(f"skip {what}: {why}")
        cells += [dataclasses.replace(cell, results_dir=str(out / param.folder(value))) for cell in value_cells]
    print(f"{len(cells)} cells ({len(param.values)} values of {param.key}), {_describe(settings)}")
    report = run_grid(cells, settings)
    for value in param.values:
        folder = param.folder(value)
        ran, failed = ([label for label in labels if label.startswith(f"{folder}/")]
                       for labels in (report.ran, report.failed))
        resumed = [p for p in report.resumed if Path(p).is_relative_to(out / folder)]
        print(f"{param.key}={value}: ran {len(ran)}, resumed {len(resumed)}, failed {len(failed)}")
    for label in report.failed:
        print(f"FAILED {label} (see its JSON result for the error)")
    readme, rows = write_sweep(param, out, settings.budget, settings.seeds, param.default(), settings.device,
                               _sweep_command(args))
    for row in rows:
        if row.chosen:
            print(f"{row.method} on {row.dataset}: {param.key}={row.value} chosen on validation "
                  f"({row.val[0]:.1f} ± {row.val[1]:.1f})")
    print(f"tables in {readme}")
    return 1 if report.failed else 0


def _sweep_command(args) -> str:
    """The command that regenerates a sweep's tables (its settings, not where files went)."""
    parts = ["python -m bench sweep", args.param]
    for flag in ("methods", "datasets", "seeds", "backbone"):
        if getattr(args, flag) and not (flag == "backbone" and args.backbone == "small-cnn"):
            parts.append(f"--{flag} {getattr(args, flag)}")
    if args.budget != "quick":
        parts.append(f"--budget {args.budget}")
    parts += [f"--set {flag}" for flag in args.set]
    return " ".join(parts)


def _cell_device(args, slurm) -> torch.device:
    """Where cells run: for SLURM tasks on the nodes (not checked here, the submitting machine
    may have no GPU): --device, else cuda when the tasks get GPUs; else this machine's device."""
    if args.launcher == "slurm":
        return _device_name(args.device or ("cuda" if slurm.gpus_per_task > 0 else "cpu"))
    return _device(args.device)


def _slurm_config(args):
    if args.launcher == "inline":
        return None
    from bench.settings import load_slurm_config

    flags = {"partition": args.partition, "gpus_per_task": args.gpus_per_task, "cpus_per_task": args.cpus_per_task,
             "time_min": args.time_min, "mem_gb": args.mem_gb, "array_parallelism": args.array_parallelism,
             "log_dir": args.slurm_logs}
    return load_slurm_config(args.slurm_config, {k: str(v) for k, v in flags.items() if v is not None})


def cmd_submit(args) -> int:
    from bench.config import parse_set_flags
    from bench.settings import PROTOCOL_BUDGET
    from bench.submit import submit

    args.budget = args.budget or PROTOCOL_BUDGET
    settings = run_settings(args)
    result = submit(args.file, settings, overrides=parse_set_flags(args.set))
    for what, why in result.skipped:
        print(f"skip {what}: {why}")
    if result.deviations:
        print(f"OFF-PROTOCOL submission ({'; '.join(result.deviations)}): its entries and table rows say so")
    print(f"{result.method}: ran {len(result.ran)}, resumed {len(result.resumed)}, failed {len(result.failed)}")
    for label in result.failed:
        print(f"FAILED {label} (see its JSON result for the error)")
    for problem in result.problems:
        print(f"INVALID {problem}")
    print(("submitted: " if result.ok else "not submitted: ") + f"tables in {settings.results_dir.parent / 'README.md'}")
    return 0 if result.ok else 1


def cmd_report(args) -> int:
    from bench.report import write_report

    index = write_report(args.results, args.out, kernels=args.kernels, screenshot=args.screenshot)
    print(f"wrote {index}" + (f" and {args.screenshot}" if args.screenshot else ""))
    return 0


def cmd_leaderboard(args) -> int:
    from bench.leaderboard import write_leaderboard

    if args.check:
        from bench.entries import check_entries
        from bench.leaderboard import REPORTED_CSV, load_reported

        from bench.transfer.entries import check_transfer_entries

        problems = [str(p) for p in check_entries(args.results, allow_empty=args.allow_empty)]
        problems += [str(p) for p in check_transfer_entries(args.results)]
        try:
            load_reported(args.reported or REPORTED_CSV)
        except (OSError, ValueError) as err:
            problems.append(str(err))
        for problem in problems:
            print(problem)
        n = len(list(args.results.glob("*/*/seed*.json")))
        print(f"{len(problems)} problem(s) in {n} entries under {args.results}" if problems
              else f"{n} entries under {args.results}: all valid")
        return 1 if problems else 0
    published = write_leaderboard(args.results, args.out or args.results.parent, allow_empty=args.allow_empty)
    print(f"wrote {published.readme} and {published.table}")
    if published.excluded:
        print(f"left out {len(published.excluded)} entries that fail their checks (warnings above; "
              f"leaderboard --check lists every problem)")
    return 0


def cmd_data(args) -> int:
    from bench.registry import all_datasets, get_dataset

    if args.data_command == "prepare":
        names = _csv(args.dataset) or [n for n, d in all_datasets().items() if d.synthetic]
        for name in names:
            get_dataset(name)().prepare(args.root)
            print(f"{name}: ready under {args.root}")
        return 0
    if args.data_command == "check":
        from bench.config import apply_overrides, parse_set_flags
        from bench.data.check import check_dataset

        overrides = parse_set_flags(args.set)
        status = 0
        for name in _csv(args.dataset) or []:
            cls = get_dataset(name)
            if cls.synthetic:
                print(f"{name}: embedded (generated by `data prepare`); nothing to check")
                continue
            dataset = cls(apply_overrides(cls.Config(), overrides.get(name, {}), name))
            report = check_dataset(dataset, args.root, decode=args.decode, progress=args.progress)
            print(report.render(args.max_lines))
            status = max(status, 0 if report.ok else 1)
        return status
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
    if args.append and not args.append.is_file():  # before minutes of profiling, not after
        raise FileNotFoundError(f"--append {args.append}: no such file (write it with --write first)")
    sections = []
    for op in ops:
        for table in profiles[op](device, args.size):
            text = tabulate(table.rows, headers="keys", tablefmt="github", floatfmt=".3f")
            notes = "".join(f"\n- {n}" for n in table.notes)
            sections.append(f"### {table.title}\n\n{text}\n{notes}\n")
            print(sections[-1])
    if args.write or args.append:
        stamp = (f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; "
                 f"torch {torch.__version__}; CUDA {torch.version.cuda}; "
                 f"date {_dt.date.today().isoformat()}; size {args.size}")
        from bench.io import atomic_write_text

        if args.write:
            atomic_write_text(args.write, f"# Kernel speed tables\n\nWritten by `python -m bench profile "
                                          f"--device {device.type} --write {args.write}`.\n\n{stamp}\n\n"
                                          + "\n".join(sections))
        else:  # later tables added to a file without re-running the others; each addition is stamped
            added = (f"\n## Added by `python -m bench profile --device {device.type} --op {','.join(ops)} "
                     f"--append {args.append}`\n\n{stamp}\n\n" + "\n".join(sections))
            atomic_write_text(args.append, args.append.read_text().rstrip("\n") + "\n" + added)
        print(f"wrote {args.write or args.append}")
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
    p.add_argument("--transfer", action="append", default=[], metavar="SRC:TGT",
                   help="a source-free domain adaptation pair: every adaptation (adaptations/), source-only and "
                        "target-supervised, seeds as --seeds; with --all, every declared pair found on disk")
    p.add_argument("--adaptations", help="comma-separated adaptation names for --transfer (default: all)")
    _add_run_flags(p, set_help="override a method, dataset or adaptation setting, e.g. --set synth-objects.image_size=64")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="one method or dataset setting over several values, chosen on the validation "
                                     "split (one result folder per value)")
    p.add_argument("param", metavar="OWNER.KEY=V1,V2,...", help="the setting and its values, e.g. "
                                                                "colocam.joint_weight=0,0.01,0.1,1")
    p.add_argument("--methods", help="comma-separated method names (default: the owner, when it is a method)")
    p.add_argument("--datasets", help="comma-separated dataset names (default: the owner, when it is a dataset; "
                                      "else every available dataset the methods run on)")
    p.add_argument("--out", type=Path, help="sweep folder (default leaderboard/sweeps/OWNER.KEY): one result folder "
                                            "per value and README.md, the tables")
    _add_run_flags(p, results=False, val_metrics=False, set_help="other settings, fixed for every value")
    p.set_defaults(func=cmd_sweep, results=None)

    p = sub.add_parser("submit", help="run one new method file under the protocol, validate and table its entries. "
                                      "Imports FILE and every plugin file: their code runs with your rights, so "
                                      "submit only code you have read")
    p.add_argument("file", type=Path, help="the method's plugin file, e.g. methods/mine.py (one registered method)")
    _add_run_flags(p, budget_default=None,
                   budget_help="NOT the protocol: smoke/tests only (default: the protocol's budget, quick); entries "
                               "and table rows are then marked off-protocol",
                   seeds_help="NOT the protocol (default: the protocol's seeds 0,1,2); marked off-protocol",
                   set_help="NOT the protocol: a dataset or method setting (tests); marked off-protocol")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("leaderboard", help="regenerate leaderboard/README.md and results.csv, or --check the entries")
    p.add_argument("--results", type=Path, default=REPO_ROOT / "leaderboard" / "results")
    p.add_argument("--out", type=Path, help="output folder (default: beside --results)")
    p.add_argument("--check", action="store_true",
                   help="validate every entry (schema, checksum, config hash, method code hash, duplicates) and "
                        "reported.csv; exit 1 listing each problem; writes nothing")
    p.add_argument("--reported", type=Path, help="reported.csv to validate with --check (default leaderboard/reported.csv)")
    p.add_argument("--allow-empty", action="store_true",
                   help="accept a result folder without entries (and write empty tables); by default a missing or "
                        "empty --results is an error")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("report", help="static HTML report: tables, CAM overlays, threshold and PR curves, kernels")
    p.add_argument("--results", type=Path, default=REPO_ROOT / "leaderboard" / "results")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "leaderboard" / "report",
                   help="output folder for index.html and figures/ (default leaderboard/report)")
    p.add_argument("--kernels", type=Path, default=REPO_ROOT / "leaderboard" / "kernels.md",
                   help="kernel speed tables to include (skipped when the file is absent)")
    p.add_argument("--screenshot", type=Path, help="also save a full-page PNG screenshot (needs headless Chromium)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("prepare", help="generate the embedded synthetic suite")
    q.add_argument("--dataset", help="comma-separated names (default: every synthetic dataset)")
    q.add_argument("--root", type=Path, default=_default_data_root())
    q = dsub.add_parser("check", help="validate a dataset's layout (exit 1 on errors; count mismatches only warn)")
    q.add_argument("--dataset", required=True, help="comma-separated dataset names")
    q.add_argument("--root", type=Path, default=_default_data_root(), help="the --data-root of a later run")
    q.add_argument("--set", action="append", default=[], metavar="DATASET.KEY=VALUE",
                   help="dataset setting, e.g. --set glas.fold=2")
    q.add_argument("--decode", action="store_true", help="decode every image fully (slow; default: headers only)")
    q.add_argument("--progress", action="store_true", help="progress bars")
    q.add_argument("--max-lines", type=int, default=50, help="problems shown per kind (default 50)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("weights", help="backbone weights utilities")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    q = wsub.add_parser("check", help="list the weights folder's files per backbone and verify their keys and shapes "
                                      "(exit 1 when a present file is bad)")
    q.add_argument("--weights-dir", default=os.environ.get("WSOLBENCH_WEIGHTS"),
                   help="the folder (default env WSOLBENCH_WEIGHTS)")
    q.add_argument("--backbone", help="comma-separated backbones (default: resnet50, vgg16, inceptionv3)")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("profile", help="kernel speed tables")
    p.add_argument("--op", help="comma-separated profiles (default: all)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when visible)")
    p.add_argument("--size", default="full", choices=("full", "small"))
    out = p.add_mutually_exclusive_group()
    out.add_argument("--write", type=Path, help="write the tables to this markdown file (e.g. leaderboard/kernels.md)")
    out.add_argument("--append", type=Path, help="add the tables, with their own stamp, to an existing file")
    p.set_defaults(func=cmd_profile)
    return parser


def _jobs(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        jobs = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of workers or 'auto', got {value!r}") from None
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"needs at least 1 worker, got {jobs}")
    return jobs


def _add_run_flags(p: argparse.ArgumentParser, *, results: bool = True, val_metrics: bool = True,
                   budget_default: str | None = "quick",
                   budget_help: str = "smoke | quick | paper (default quick)",
                   seeds_help: str = "comma-separated seeds (default 0,1,2)", set_help: str = "") -> None:
    """The flags every command that runs cells shares (run, sweep, submit): one RunSettings."""
    p.add_argument("--seeds", help=seeds_help)
    p.add_argument("--budget", default=budget_default, help=budget_help)
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when visible, else cpu)")
    p.add_argument("--backbone", default="small-cnn")
    p.add_argument("--weights", help="local backbone weights file (torchvision state-dict layout)")
    p.add_argument("--weights-dir", default=os.environ.get("WSOLBENCH_WEIGHTS"),
                   help="folder of backbone weights, the file for --backbone found by name (torchvision's "
                        "checkpoint names or <backbone>.pth; env WSOLBENCH_WEIGHTS; `bench weights check`)")
    p.add_argument("--random-init", action="store_true",
                   help="let the paper budget run a real dataset from random weights (entries marked off-protocol)")
    p.add_argument("--data-root", type=Path, default=_default_data_root(),
                   help="where datasets live and the synthetic suite is generated (env WSOLBENCH_DATA)")
    if results:
        p.add_argument("--results", type=Path, default=REPO_ROOT / "leaderboard" / "results",
                       help="result folder; tables are written beside it")
    p.add_argument("--cache-dir", type=Path, default=_default_cache_dir(),
                   help="stage-1 classifier cache (env WSOLBENCH_CACHE)")
    p.add_argument("--set", action="append", default=[], metavar="OWNER.KEY=VALUE", help=set_help)
    p.add_argument("--overwrite", action="store_true",
                   help="let cells replace entries written under another budget or backbone in the results folder "
                        "(refused by default: a results folder holds one budget and backbone)")
    if val_metrics:
        p.add_argument("--val-metrics", action="store_true",
                       help="score every cell on the validation split too and keep those metrics in its entry "
                            "(mask datasets always do: their Dice threshold comes from it); finished entries "
                            "without them are run again")
    _add_scale_out(p)


def _add_scale_out(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out")
    g.add_argument("--jobs", type=_jobs, default=None, metavar="N|auto",
                   help="local worker processes (default auto: one per visible GPU, or on CPU one per core, at most "
                        "8 and at most the cells to run)")
    g.add_argument("--threads", type=int,
                   help="torch threads per cell (default on CPU: 1, so that a cell's metrics do not depend on --jobs "
                        "or on the machine's core count; on a GPU the machine's threads split among the workers; a "
                        "SLURM task's cpus)")
    g.add_argument("--launcher", default="inline", choices=("inline", "slurm", "local"),
                   help="inline: this machine (with --jobs); slurm: a SLURM job array through submitit, one cell per "
                        "task; local: submitit's local executor (tests)")
    g.add_argument("--slurm-config", type=Path, help="TOML or JSON file of SLURM settings (bench.settings.SlurmConfig)")
    g.add_argument("--partition")
    g.add_argument("--gpus-per-task", type=int)
    g.add_argument("--cpus-per-task", type=int)
    g.add_argument("--time-min", type=int, help="time limit of one task in minutes")
    g.add_argument("--mem-gb", type=int)
    g.add_argument("--array-parallelism", type=int, help="tasks of the array running at once")
    g.add_argument("--slurm-logs", help="submitit's log folder (default: beside --results, submitit/)")
    g.add_argument("--no-wait", dest="wait", action="store_false",
                   help="return after submitting the array (the tasks write entries and tables themselves)")


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
