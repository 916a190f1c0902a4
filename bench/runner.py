"""One cell of the grid: a method trained and evaluated on a dataset with a seed."""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import platform
import random
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import bench
from bench.artifacts import SampleCollector, sample_indices, write_artifacts
from bench.config import Budget, config_hash, paper_preset, resolve_budget, to_jsonable
from bench.entries import RESULT_SCHEMA, file_sha256, method_file_sha256, write_entry
from bench.io import atomic_torch_save, file_lock, results_lock
from bench.metrics import BoxEvaluator, CorLocEvaluator, MaskEvaluator, Top1Cls, normalize_scoremaps
from bench.models import WSOLNet, build_classifier
from bench.dataset import make_loader
from bench.method.training import train
from bench.settings import RunSettings

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def preserved_rng():
    """Restore the Python, NumPy and torch (CPU and CUDA) random states on exit."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def git_version(root: Path) -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@dataclass
class RunContext:
    """What a method gets besides its data: the run's settings, this cell's budget (resolved
    for its dataset and backbone), seed, device and dataset plugin, the stage-1 classifier."""

    settings: RunSettings
    budget: Budget
    seed: int
    dataset: object  # the Dataset plugin instance
    splits: object  # bench.dataset.Splits
    timings: dict = field(default_factory=dict)
    log: logging.Logger = log

    @property
    def device(self) -> torch.device:
        return self.settings.torch_device

    @property
    def cache_dir(self) -> Path:
        return self.settings.cache_dir

    @property
    def backbone(self) -> str:
        return self.settings.backbone

    @property
    def weights(self) -> str | None:
        return self.settings.weights

    @property
    def num_classes(self) -> int:
        return self.splits.num_classes

    def new_classifier(self) -> WSOLNet:
        return build_classifier(self.backbone, self.num_classes, self.weights).to(self.device)

    def stage1_key(self) -> dict:
        b, run = self.budget, self.budget.stage1_schedule()
        key = {"dataset": self.dataset.name, "dataset_config": to_jsonable(self.dataset.cfg),
               "backbone": self.backbone, "weights": file_sha256(self.weights), "seed": self.seed,
               "epochs": run.epochs, "batch_size": b.batch_size, "lr": run.lr, "wd": run.weight_decay,
               "momentum": b.momentum, "max_train_images": b.max_train_images, "input_size": b.input_size,
               "crop_from": b.crop_from,
               "mixed_precision": b.mixed_precision}
        if run.step_every is not None:  # cosine runs keep the keys (and caches) from before step decay
            key["lr_step"] = [run.step_every, run.gamma]
        return key

    def classifier(self) -> WSOLNet:
        """The shared stage-1 CAM classifier for this dataset x backbone x seed, trained once
        and cached on disk (loaded with weights_only=True)."""
        key = self.stage1_key()
        path = self.cache_dir / "stage1" / self.dataset.name / f"{self.backbone}-seed{self.seed}-{config_hash(key)}.pt"
        model = self.new_classifier()
        # One process trains it, the others wait and load it (--jobs, job arrays); the caller's
        # random state is the same whether it was trained here or loaded, so a cell's result
        # does not depend on which cell of the grid happened to train the classifier.
        with file_lock(path.with_name(path.name + ".lock")), preserved_rng():
            if path.is_file():
                state = torch.load(path, map_location=self.device, weights_only=True)
                model.load_state_dict(state["state_dict"])
                model.eval()
                return model
            start = time.perf_counter()
            seed_everything(self.seed)
            train(model, model.parameters(), self.splits.train, self.budget, self.device,
                  self.budget.stage1_schedule(), self.seed,
                  desc=f"stage-1 {self.dataset.name}/{self.backbone}/seed{self.seed}")
            atomic_torch_save(path, {"state_dict": model.state_dict(), "key": key})
            self.timings["stage1_s"] = round(time.perf_counter() - start, 3)
        model.eval()
        return model


def evaluate(method, split, dataset, budget: Budget, device: torch.device, tau: float | None = None,
             samples: SampleCollector | None = None) -> tuple[dict, dict]:
    """Localize every image of `split` and compute its metrics (docs/protocol.md, "Metrics").
    Returns (metrics, curves); `samples` keeps the maps of a few images for the report."""
    size = (dataset.eval_size, dataset.eval_size)
    with_boxes = getattr(split, "with_boxes", False)
    # video: CorLoc over annotated frames (one frame per item; a batch holds frames of whole shots
    # in temporal order, localized in parallel); image: the box accuracies
    corloc = CorLocEvaluator(dataset.num_classes, getattr(dataset, "subsets", ())) \
        if with_boxes and dataset.task == "video" else None
    boxes = BoxEvaluator() if with_boxes and corloc is None else None
    masks = MaskEvaluator() if getattr(split, "with_masks", False) else None
    top1 = Top1Cls()
    loader = make_loader(split, budget.batch_size, shuffle=False, num_workers=budget.num_workers, device=device)
    for batch in loader:
        images, labels = batch["image"].to(device), batch["label"].to(device)
        loc = method.localize(images, dataset.localization_classes(labels))
        if loc.cams.dim() != 3 or loc.cams.shape[0] != images.shape[0]:
            raise ValueError(f"{method.name}.localize returned cams of shape {tuple(loc.cams.shape)}; "
                             f"expected [{images.shape[0]}, h, w]")
        maps = normalize_scoremaps(loc.cams.detach().float().cpu(), size)
        cls_correct = None if loc.logits is None else top1.accumulate(loc.logits.detach(), labels)
        if samples is not None:
            samples.accumulate(batch, maps)
        if boxes is not None:
            boxes.accumulate(maps, batch["boxes"], cls_correct)
        if corloc is not None:
            corloc.accumulate(maps, batch["boxes"], labels.cpu(), batch.get("subset"))
        if masks is not None:
            masks.accumulate(maps, batch["mask"])
    metrics: dict = {}
    curves: dict = {}
    if boxes is not None:
        metrics.update(boxes.compute())
        curves["box"] = boxes.curves()
    if corloc is not None:
        metrics.update(corloc.compute())
        curves["corloc"] = corloc.curves()
    if masks is not None:
        metrics.update(masks.compute(tau))
        curves["mask"] = masks.curves()
    if top1.count:
        metrics.update(top1.compute())
    return metrics, curves


def result_path(results_dir: Path, dataset: str, method: str, seed: int) -> Path:
    return Path(results_dir) / dataset / method / f"seed{seed}.json"


def cell_config(method_cls, method_cfg, dataset, seed: int, settings: RunSettings) -> dict:
    """What a cell's result depends on (its hash resumes the grid); the budget as the cell trains
    with it (`resolve_budget`: the `paper` budget with the dataset's published schedules)."""
    budget = resolve_budget(settings.budget, dataset, settings.backbone)
    config = {"method": method_cls.name, "method_config": to_jsonable(method_cfg), "dataset": dataset.name,
              "dataset_config": to_jsonable(dataset.cfg), "budget": to_jsonable(budget), "seed": seed,
              "backbone": settings.backbone, "weights": file_sha256(settings.weights)}
    preset = paper_preset(method_cls, dataset.name, settings.budget.name)
    if preset:  # the authors' configuration this cell took (its values are in method_config too)
        config["paper_preset"] = preset
    return config


def run_cell(cell, settings: RunSettings) -> dict:
    """Run one cell (a `bench.grid.Cell`) and write its sealed entry (and its small artifacts for
    the report) atomically; a failure is recorded, not raised. `settings.submission` (from
    `bench submit`) is stored in the entry: whether it ran under the protocol and, if not, why."""
    method_cls, method_cfg, dataset = cell.build(settings.budget.name)
    seed, device, results_dir = cell.seed, settings.torch_device, cell.results_in(settings)
    budget = resolve_budget(settings.budget, dataset, settings.backbone)
    config = cell_config(method_cls, method_cfg, dataset, seed, settings)
    path = result_path(results_dir, dataset.name, method_cls.name, seed)
    record = {
        "schema": RESULT_SCHEMA, "method": method_cls.name, "dataset": dataset.name, "seed": seed,
        "budget": budget.name, "backbone": settings.backbone, "task": dataset.task,
        "primary_metric": dataset.primary_metric, "config": config, "config_hash": config_hash(config),
        "code_version": {"wsolbench": bench.__version__, "git": git_version(Path(__file__).parent.parent),
                         "method_file_sha256": method_file_sha256(method_cls)},
        "torch": torch.__version__, "device": device_name(device), "extension": bench.EXTENSION_FLAVOUR,
    }
    if settings.submission is not None:
        record["submission"] = settings.submission
    timings: dict = {}
    artifacts = None
    start = time.perf_counter()
    try:
        seed_everything(seed)
        splits = dataset.splits(settings.data_root, budget)
        ctx = RunContext(settings=settings, budget=budget, seed=seed, dataset=dataset, splits=splits, timings=timings)
        method = method_cls(method_cfg)
        t0 = time.perf_counter()
        method.fit(splits.train, splits.val, ctx)
        timings["fit_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        tau = val_metrics = None
        if dataset.annotation == "mask":  # Dice / mIoU use the validation-best threshold
            val_metrics, _ = evaluate(method, splits.val, dataset, budget, device)
            tau = val_metrics["best_tau"]
        collector = SampleCollector(sample_indices(len(splits.test)))
        metrics, curves = evaluate(method, splits.test, dataset, budget, device, tau=tau, samples=collector)
        if val_metrics is None:
            # the validation pass (for model selection: `bench sweep`) after the test pass: a method
            # that draws random numbers at inference (Smooth-GradCAM++) then gives the same test
            # metrics as before validation metrics were recorded
            val_metrics, _ = evaluate(method, splits.val, dataset, budget, device)
        timings["eval_s"] = round(time.perf_counter() - t0, 3)
        bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"metrics not finite: {', '.join(bad)}")
        artifacts = (collector, curves)
        record.update(status="ok", metrics=metrics, val_metrics=val_metrics, error=None)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # one failing cell is recorded and the grid goes on
        log.error("cell %s/%s/seed%d failed: %s", dataset.name, method_cls.name, seed, err)
        record.update(status="failed", metrics={}, error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc(limit=20))
    timings["total_s"] = round(time.perf_counter() - start, 3)
    record["timings"] = timings
    record["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    # the entry and its artifacts together under the folder's lock: a concurrent run of the same
    # cell cannot pair this entry with the other run's artifact file
    with results_lock(results_dir):
        if artifacts is not None:
            record["artifacts"] = write_artifacts(path, dataset, *artifacts)
        return write_entry(results_dir, path, record)
