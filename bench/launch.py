"""Running the cells of a grid elsewhere than in this process: local worker processes
(`--jobs N`, the standard library's process pool) or a SLURM job array through submitit
(`--launcher slurm`; `--launcher local` is submitit's local executor, for tests).

Cells cross process boundaries as `CellSpec`s: plain names, a seed and the `--set` overrides
that concern them, never plugin classes (plugins are loaded by path, so a worker rebuilds the
method and dataset from the registry exactly as `build_cells` did). Each cell seeds itself and
the shared stage-1 classifier is trained by one process under a file lock, so the results do
not depend on the number of workers or on the order cells finish in.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench.config import Budget, apply_overrides, config_hash, to_jsonable

log = logging.getLogger(__name__)
LAUNCHERS = ("inline", "slurm", "local")


@dataclass(frozen=True)
class CellSpec:
    """One cell as plain data: what a worker process or a cluster task needs to rebuild it."""

    method: str
    dataset: str
    seed: int
    overrides: dict  # {"<method>": {key: value}, "<dataset>": {key: value}}: the --set flags for this cell
    results_dir: str | None = None  # this cell's own result folder (None: the grid's, RunOptions.results_dir)

    @property
    def label(self) -> str:
        return cell_label(self.dataset, self.method, self.seed, self.results_dir)


def cell_label(dataset: str, method: str, seed: int, results_dir=None) -> str:
    """"<dataset>/<method>/seed<k>", prefixed by the name of the cell's own result folder if it
    has one (a sweep's value: "joint_weight=0.03/synth-video/colocam/seed0")."""
    label = f"{dataset}/{method}/seed{seed}"
    return f"{Path(results_dir).name}/{label}" if results_dir is not None else label


@dataclass(frozen=True)
class RunOptions:
    """Everything besides the cell that `run_cell` needs, picklable."""

    budget: Budget
    data_root: Path
    results_dir: Path
    cache_dir: Path
    device: str
    backbone: str = "small-cnn"
    weights: str | None = None
    submission: dict | None = None
    plugins: str = ""  # WSOLBENCH_PLUGINS of the submitting process
    threads: int | None = None  # torch threads in the worker (None: torch's default)
    write_tables: bool = False  # regenerate the tables after the cell (cluster tasks)


def spec_of(cell) -> CellSpec:
    """The plain-data form of a `bench.grid.Cell`; only registered plugins can be rebuilt."""
    from bench.registry import all_datasets, all_methods

    own_dir = getattr(cell, "results_dir", None)
    spec = CellSpec(cell.method_cls.name, cell.dataset.name, cell.seed, dict(getattr(cell, "overrides", {}) or {}),
                    None if own_dir is None else str(own_dir))
    if all_methods().get(spec.method) is not cell.method_cls:
        raise ValueError(f"cell {spec.label}: method class {cell.method_cls.__qualname__} is not the registered "
                         f"{spec.method!r}; worker processes rebuild cells from the registry (put it in a plugin file)")
    if all_datasets().get(spec.dataset) is not type(cell.dataset):
        raise ValueError(f"cell {spec.label}: dataset class {type(cell.dataset).__qualname__} is not the registered "
                         f"{spec.dataset!r}; worker processes rebuild cells from the registry")
    method_cls, method_cfg, dataset = rebuild(spec)
    if config_hash(method_cfg) != config_hash(cell.method_cfg) or config_hash(dataset.cfg) != config_hash(cell.dataset.cfg):
        raise ValueError(f"cell {spec.label}: its configuration is not its defaults plus its --set overrides, so a "
                         f"worker could not rebuild it")
    return spec


def rebuild(spec: CellSpec):
    """(method class, method config, dataset instance) of a spec, from the registry."""
    from bench.registry import get_dataset, get_method

    mcls, dcls = get_method(spec.method), get_dataset(spec.dataset)
    mcfg = apply_overrides(mcls.Config(), spec.overrides.get(spec.method, {}), spec.method)
    dataset = dcls(apply_overrides(dcls.Config(), spec.overrides.get(spec.dataset, {}), spec.dataset))
    return mcls, mcfg, dataset


def execute(spec: CellSpec, opts: RunOptions, device: str | None = None) -> dict:
    """Run one cell in this process (a pool worker or a cluster task); returns a short summary."""
    if opts.plugins:
        os.environ["WSOLBENCH_PLUGINS"] = opts.plugins
    if opts.threads:
        torch.set_num_threads(opts.threads)
    from bench.runner import run_cell

    method_cls, method_cfg, dataset = rebuild(spec)
    results_dir = Path(spec.results_dir) if spec.results_dir is not None else opts.results_dir
    record = run_cell(method_cls, method_cfg, dataset, opts.budget, spec.seed, data_root=opts.data_root,
                      results_dir=results_dir, cache_dir=opts.cache_dir, device=torch.device(device or opts.device),
                      backbone=opts.backbone, weights=opts.weights, submission=opts.submission)
    if opts.write_tables:
        from bench.leaderboard import write_leaderboard

        write_leaderboard(results_dir, results_dir.parent)
    return {"label": spec.label, "status": record["status"], "error": record.get("error")}


def interleave(specs: list[CellSpec]) -> list[CellSpec]:
    """Round-robin over (dataset, seed) groups, keeping each group's order: the first cells
    handed to N workers need different stage-1 classifiers, so no worker waits for another's."""
    groups: dict[tuple, list[CellSpec]] = {}
    for s in specs:
        groups.setdefault((s.dataset, s.seed), []).append(s)
    out, queues = [], list(groups.values())
    while queues:
        out += [q.pop(0) for q in queues]
        queues = [q for q in queues if q]
    return out


# ---- local worker processes -------------------------------------------------------------

_WORKER: dict = {}


def _die_with_parent(parent: int) -> None:
    """End this worker as soon as the grid's process dies. A parent killed outright (SIGKILL,
    an out-of-memory kill) runs no clean-up, and its workers would otherwise go on taking
    queued cells and writing their results behind the back of the run that resumes them."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the kernel kills us with the parent
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch():  # other systems (and a safety net): poll the parent
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_worker(slots, devices: list[str], threads: int, parent: int) -> None:
    _die_with_parent(parent)
    slot = slots.get()
    _WORKER["device"] = devices[slot % len(devices)]
    torch.set_num_threads(threads)


@contextlib.contextmanager
def _quiet_children():
    """Workers inherit TQDM_DISABLE=1 (read when tqdm is imported, so it must be in their
    environment from the start): the parent shows one bar for the grid. This process's own
    tqdm, imported already, is unaffected."""
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


def _pool_task(spec: CellSpec, opts: RunOptions) -> dict:
    return execute(spec, opts, device=_WORKER.get("device"))


def worker_devices(device: torch.device, jobs: int) -> list[str]:
    """One GPU per worker when several are visible and no index was named; else the device."""
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [str(device)]


# `--jobs auto` on CPU: one single-threaded worker per core, at most this many (each worker holds
# torch, a dataset and a model: ~1 GiB; past a few workers the stage-1 classifiers, trained
# once each under a lock, are what the others wait for)
MAX_AUTO_CPU_JOBS = 8


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_jobs(device: torch.device, cells: int) -> int:
    """`--jobs auto`: one worker per visible GPU (none when a GPU index is named); on CPU one per
    core, up to MAX_AUTO_CPU_JOBS; never more than the cells to run."""
    if device.type == "cuda":
        n = torch.cuda.device_count() if device.index is None else 1
    else:
        n = min(usable_cores(), MAX_AUTO_CPU_JOBS)
    return max(1, min(n, cells))


def default_cell_threads(device: torch.device) -> int | None:
    """Torch threads per cell when `--threads` is not given, for cells on this machine: one on
    CPU, so that a cell's metrics depend on its seed and configuration alone (CPU float
    reductions depend on the thread count), whatever `--jobs` and the machine's core count;
    None elsewhere (the machine's threads split among the workers)."""
    return 1 if device.type == "cpu" else None


def cpu_threads_per_worker(jobs: int) -> int:
    """This process's torch threads split among the workers (at least one each)."""
    return max(1, torch.get_num_threads() // jobs)


def run_local_pool(specs: list[CellSpec], opts: RunOptions, jobs: int) -> list[dict]:
    devices = worker_devices(torch.device(opts.device), jobs)
    threads = opts.threads or cpu_threads_per_worker(jobs)
    ctx = mp.get_context("spawn")  # no fork of a process holding torch threads or CUDA
    slots = ctx.Queue()
    for i in range(jobs):
        slots.put(i)
    log.info("%d worker processes, devices %s, %d torch threads each", jobs, ",".join(devices), threads)
    summaries = []
    with _quiet_children(), cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                                   initargs=(slots, devices, threads, os.getpid())) as pool:
        futures = {pool.submit(_pool_task, s, opts): s for s in interleave(specs)}
        try:
            with tqdm(total=len(futures), desc=f"grid (--jobs {jobs})", unit="cell", dynamic_ncols=True) as bar:
                for future in cf.as_completed(futures):
                    spec = futures[future]
                    try:
                        summaries.append(future.result())
                    except Exception as err:  # a worker died or a plugin failed to load: recorded, not fatal
                        log.error("cell %s: worker failed: %s", spec.label, err)
                        summaries.append({"label": spec.label, "status": "failed", "error": f"{type(err).__name__}: {err}"})
                    bar.set_postfix_str(spec.label)
                    bar.update(1)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return summaries


# ---- SLURM through submitit --------------------------------------------------------------

@dataclass(frozen=True)
class SlurmConfig:
    """Resources of one task of the job array (one cell per task)."""

    partition: str | None = None
    gpus_per_task: int = 1
    cpus_per_task: int = 8
    mem_gb: int | None = None
    time_min: int = 240
    array_parallelism: int = 64  # tasks of the array running at once
    account: str | None = None
    qos: str | None = None
    log_dir: str | None = None  # submitit's folder (default: beside the results, submitit/)
    additional: dict = field(default_factory=dict)  # other sbatch options, e.g. {"constraint": "a100"}


def load_slurm_config(path: Path | None, flags: dict[str, str]) -> SlurmConfig:
    """A SlurmConfig from a TOML or JSON file (keys = its fields) with `flags` (strings, from the
    command line) applied over it; unknown keys are errors naming the file."""
    cfg = SlurmConfig()
    if path is not None:
        path = Path(path)
        try:
            if path.suffix == ".toml":
                try:
                    import tomllib
                except ImportError:  # Python 3.10
                    raise ValueError(f"{path}: TOML needs Python 3.11+; write the settings as JSON") from None
                data = tomllib.loads(path.read_text())
            else:
                data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read the SLURM config ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a table of settings")
        names = {f.name for f in fields(SlurmConfig)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{path}: unknown SLURM setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        extra = data.pop("additional", {})
        if not isinstance(extra, dict):
            raise ValueError(f"{path}: 'additional' must be a table of sbatch options")
        cfg = apply_overrides(cfg, {k: str(v) for k, v in data.items()}, str(path))
        cfg = dataclasses.replace(cfg, additional=dict(extra))
    return apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None}, "--launcher slurm")


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ValueError("--launcher slurm/local needs submitit: pip install -e '.[slurm]'") from None
    return submitit


def run_submitit(specs: list[CellSpec], opts: RunOptions, cluster: str, cfg: SlurmConfig, wait: bool) -> list[dict]:
    """Submit one task per cell as a job array (`cluster` "slurm", or "local": submitit's local
    executor). With `wait`, wait for every task and return their summaries; else return the
    submitted jobs as summaries with status "submitted"."""
    submitit = _submitit()
    folder = Path(cfg.log_dir) if cfg.log_dir else Path(opts.results_dir).parent / "submitit"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {"name": "wsolbench", "timeout_min": cfg.time_min, "cpus_per_task": cfg.cpus_per_task,
              "gpus_per_node": cfg.gpus_per_task, "slurm_array_parallelism": cfg.array_parallelism}
    if cfg.mem_gb is not None:
        params["mem_gb"] = cfg.mem_gb
    for key in ("partition", "account", "qos"):
        if getattr(cfg, key):
            params[f"slurm_{key}"] = getattr(cfg, key)
    if cfg.additional:
        params["slurm_additional_parameters"] = dict(cfg.additional)
    executor.update_parameters(**params)
    task_opts = dataclasses.replace(opts, threads=opts.threads or cfg.cpus_per_task)
    jobs = executor.map_array(execute, specs, [task_opts] * len(specs))
    log.info("submitted %d tasks (%s); logs in %s", len(jobs), jobs[0].job_id if jobs else "-", folder)
    if not wait:
        return [{"label": s.label, "status": "submitted", "job": j.job_id} for s, j in zip(specs, jobs)]
    summaries = []
    for spec, job in tqdm(list(zip(specs, jobs)), desc=f"grid ({cluster} array)", unit="cell", dynamic_ncols=True):
        try:
            summaries.append(job.result())
        except Exception as err:  # the task died (timeout, preemption, out of memory): rerun to resume
            summaries.append({"label": spec.label, "status": "failed", "error": f"{type(err).__name__}: {err}"})
    return summaries


def options(budget: Budget, *, data_root, results_dir, cache_dir, device, backbone, weights, submission) -> RunOptions:
    return RunOptions(budget=budget, data_root=Path(data_root), results_dir=Path(results_dir), cache_dir=Path(cache_dir),
                      device=str(device), backbone=backbone, weights=weights,
                      submission=to_jsonable(submission) if submission else None,
                      plugins=os.environ.get("WSOLBENCH_PLUGINS", ""))
