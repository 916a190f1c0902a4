"""Running the cells of a grid elsewhere than in this process: local worker processes
(`--jobs N`, the standard library's process pool) or a SLURM job array through submitit
(`--launcher slurm`; `--launcher local` is submitit's local executor, for tests).

Cells cross process boundaries as they are (`bench.grid.Cell`, `bench.transfer.track.TransferCell`:
plain names, a seed and the `--set` overrides that concern them, never plugin classes: plugins
are loaded by path, so a worker builds the method and dataset from the registry), with the
run's `RunSettings`; a cell's `run(settings)` writes its entry. Each cell seeds itself and
the shared stage-1 classifier is trained by one process under a file lock, so the results do
not depend on the number of workers or on the order cells finish in.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench.settings import RunSettings, SlurmConfig

log = logging.getLogger(__name__)


def execute(cell, settings: RunSettings, device: str | None = None) -> dict:
    """Run one cell in this process (inline, a pool worker or a cluster task, all alike) and
    return a short summary; `device` is the one a pool worker was handed."""
    if settings.plugins:
        os.environ["WSOLBENCH_PLUGINS"] = settings.plugins
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if device is not None:
        settings = settings.replace(device=device)
    record = cell.run(settings)  # a grid cell (`bench.grid.Cell`) or a transfer cell (`TransferCell`)
    if settings.launcher != "inline" and settings.task_tables:
        from bench.leaderboard import write_leaderboard

        results_dir = cell.results_in(settings)
        write_leaderboard(results_dir, results_dir.parent)
    return {"label": cell.label, "status": record["status"], "error": record.get("error")}


def run_inline(cells: list, settings: RunSettings) -> list[dict]:
    """The cells one after the other in this process."""
    summaries = []
    with tqdm(total=len(cells), desc="grid", unit="cell", dynamic_ncols=True) as bar:
        for cell in cells:
            bar.set_postfix_str(cell.label)
            summaries.append(execute(cell, settings))
            bar.update(1)
    return summaries


def interleave(cells: list) -> list:
    """Round-robin over (dataset, seed) groups, keeping each group's order: the first cells
    handed to N workers need different stage-1 classifiers, so no worker waits for another's."""
    groups: dict[tuple, list] = {}
    for s in cells:
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
    # Ctrl-C is the grid process's to handle (it stops the pool; workers die with it): a worker
    # interrupted mid-task would only print a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored in this process for the block; an ignored signal stays ignored in the
    processes spawned meanwhile (Python keeps an inherited SIG_IGN for SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _pool_task(cell, settings: RunSettings) -> dict:
    return execute(cell, settings, device=_WORKER.get("device"))


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


def run_local_pool(cells: list, settings: RunSettings, jobs: int) -> list[dict]:
    """The cells in `jobs` worker processes. A worker that dies (killed, out of memory, a crash
    in native code) breaks the pool and every cell in flight with it: those cells are run again,
    each in a pool of its own, so the cell whose worker dies fails alone (recorded as a failed
    entry) and the others finish."""
    devices = worker_devices(settings.torch_device, jobs)
    threads = settings.threads or cpu_threads_per_worker(jobs)
    log.info("%d worker processes, devices %s, %d torch threads each", jobs, ",".join(devices), threads)
    with tqdm(total=len(cells), desc=f"grid (--jobs {jobs})", unit="cell", dynamic_ncols=True) as bar:
        summaries, broken = _pool_round(interleave(cells), settings, jobs, devices, threads, bar)
        if broken:
            log.warning("a worker process died: %d cell(s) in flight are rerun one per process", len(broken))
        for cell in broken:
            again, still = _pool_round([cell], settings, 1, devices, threads, bar)
            summaries += again
            if still:
                error = "WorkerDied: the worker process running this cell died (killed, out of memory or crashed)"
                cell.record_failure(settings, error)
                log.error("cell %s: %s", cell.label, error)
                summaries.append({"label": cell.label, "status": "failed", "error": error})
                bar.update(1)
    return summaries


def _pool_round(cells: list, settings: RunSettings, jobs: int, devices: list[str], threads: int, bar):
    """Run `cells` in one pool: (summaries, cells lost to a broken pool)."""
    ctx = mp.get_context("spawn")  # no fork of a process holding torch threads or CUDA
    slots = ctx.Queue()
    for i in range(jobs):
        slots.put(i)
    summaries, broken = [], []
    with _quiet_children(), cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                                   initargs=(slots, devices, threads, os.getpid())) as pool:
        with _sigint_ignored():  # the workers are spawned here: they start with Ctrl-C ignored
            futures = {pool.submit(_pool_task, c, settings): c for c in cells}
        try:
            for future in cf.as_completed(futures):
                cell = futures[future]
                try:
                    summaries.append(future.result())
                except BrokenProcessPool:
                    broken.append(cell)
                    continue
                except Exception as err:  # a plugin failed to load in the worker: recorded, not fatal
                    log.error("cell %s: worker failed: %s", cell.label, err)
                    summaries.append({"label": cell.label, "status": "failed", "error": f"{type(err).__name__}: {err}"})
                bar.set_postfix_str(cell.label)
                bar.update(1)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    order = {c.label: i for i, c in enumerate(cells)}
    return summaries, sorted(broken, key=lambda c: order[c.label])


# ---- SLURM through submitit --------------------------------------------------------------

def _submitit():
    try:
        import submitit
    except ImportError:
        raise ValueError("--launcher slurm/local needs submitit: pip install -e '.[slurm]'") from None
    return submitit


def run_submitit(cells: list, settings: RunSettings) -> list[dict]:
    """Submit one task per cell as a job array (`settings.launcher` "slurm", or "local":
    submitit's local executor; resources from `settings.slurm`). With `settings.wait`, wait
    for every task and return their summaries; else return the submitted jobs as summaries
    with status "submitted"."""
    submitit = _submitit()
    cluster, cfg, wait = settings.launcher, settings.slurm or SlurmConfig(), settings.wait
    folder = Path(cfg.log_dir) if cfg.log_dir else Path(settings.results_dir).parent / "submitit"
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
    task_settings = settings.replace(threads=settings.threads or cfg.cpus_per_task)
    jobs = executor.map_array(execute, cells, [task_settings] * len(cells))
    log.info("submitted %d tasks (%s); logs in %s", len(jobs), jobs[0].job_id if jobs else "-", folder)
    if not wait:
        return [{"label": c.label, "status": "submitted", "job": j.job_id} for c, j in zip(cells, jobs)]
    summaries = []
    for spec, job in tqdm(list(zip(cells, jobs)), desc=f"grid ({cluster} array)", unit="cell", dynamic_ncols=True):
        try:
            summaries.append(job.result())
        except Exception as err:  # the task died (timeout, preemption, out of memory): rerun to resume
            summaries.append({"label": spec.label, "status": "failed", "error": f"{type(err).__name__}: {err}"})
    return summaries
