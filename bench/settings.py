"""Run-wide settings: one frozen `RunSettings`, built once by the CLI (or a test) and passed
whole to the grid, the workers, the cluster tasks and each cell."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from bench.config import Budget, apply_overrides

DEFAULT_SEEDS = (0, 1, 2)
PROTOCOL_BUDGET = "quick"  # the leaderboard's budget: `bench submit` runs at it
LAUNCHERS = ("inline", "slurm", "local")


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



@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs besides its cells (picklable: it crosses to workers and tasks).

    `device`: where cells run (a pool worker may be handed another GPU: `on_device`);
    `threads`: torch threads per cell (None: the process's default, split among workers);
    `jobs`: local worker processes (None: one per core or GPU); `launcher` "inline" (this
    machine), "slurm" or "local" (submitit) with `slurm` its resources; `wait` for the array;
    `submission`: what `bench submit` stores in each entry; `plugins`: WSOLBENCH_PLUGINS of
    the submitting process; `task_tables`: a cluster task regenerates the tables beside the
    results after its cell (False where the caller writes its own: `bench sweep`);
    `overwrite`: a cell may replace an entry written under another budget or backbone;
    `val_metrics`: every cell is scored on the validation split too and the entry keeps those
    metrics (`bench sweep` chooses by them); without it only the cells whose test metrics need a
    validation pass (mask datasets: the Dice/mIoU threshold) keep them."""

    budget: Budget
    data_root: Path
    results_dir: Path
    cache_dir: Path
    device: str = "cpu"
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    backbone: str = "small-cnn"
    weights: str | None = None
    weights_dir: str | None = None  # a folder of backbone weights (bench.models.WEIGHT_FILES names)
    random_init: bool = False  # allow the `paper` budget on a real dataset without pretrained weights
    threads: int | None = None
    jobs: int | None = 1
    launcher: str = "inline"
    slurm: SlurmConfig | None = None
    wait: bool = True
    submission: dict | None = None
    plugins: str = field(default_factory=lambda: os.environ.get("WSOLBENCH_PLUGINS", ""))
    task_tables: bool = True
    overwrite: bool = False  # replace entries of another budget or backbone in the results folder
    val_metrics: bool = False

    def __post_init__(self):
        for name in ("data_root", "results_dir", "cache_dir"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        object.__setattr__(self, "device", str(self.device))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"--launcher {self.launcher!r}: known launchers: {', '.join(LAUNCHERS)}")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"--jobs {self.jobs}: needs at least 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads {self.threads}: needs at least 1")
        bad = [s for s in self.seeds if not isinstance(s, int) or s < 0]
        if bad:
            raise ValueError(f"--seeds: seeds are non-negative integers, got {', '.join(map(str, bad))}")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def backbone_weights(self) -> Path | None:
        """The weights file the run's backbone starts from (`--weights`, else the backbone's file
        in `--weights-dir`), or None: random initialisation."""
        from bench.models import resolve_weights

        return resolve_weights(self.backbone, self.weights, self.weights_dir)

    def replace(self, **changes) -> "RunSettings":
        return dataclasses.replace(self, **changes)
