"""One cell of the grid: a method trained and evaluated on a dataset with a seed."""
from __future__ import annotations

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
from bench.config import SELECTION_CRITERIA, Budget, config_hash, paper_preset, resolve_budget, to_jsonable
from bench.entries import RESULT_SCHEMA, file_sha256, method_file_sha256, write_entry
from bench.io import atomic_torch_save, atomic_write_text, file_lock, results_lock
from bench.metrics import BoxEvaluator, CorLocEvaluator, MaskEvaluator, Top1Cls, normalize_scoremaps
from bench.models import WSOLNet, backbone_fingerprint, build_classifier
from bench.dataset import make_loader
from bench.method.base import Localization
from bench.method.training import Selector, preserved_rng, train
from bench.settings import RunSettings

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    # the checkpoint each training run of the cell kept (what its entry records as `selection`):
    # "method": the method's own run, "stage1": {criterion: ...} of the stage-1 classifiers it read
    selection: dict = field(default_factory=dict)

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
    def weights(self) -> Path | None:
        return self.settings.backbone_weights()

    @property
    def num_classes(self) -> int:
        return self.splits.num_classes

    def new_classifier(self) -> WSOLNet:
        return build_classifier(self.backbone, self.num_classes, self.weights).to(self.device)

    def selection_metric(self, criterion: str) -> str:
        """The validation metric a `best-*` criterion maximises."""
        return self.dataset.primary_metric if criterion == "best-loc" else "Top-1 Cls"

    def selector(self, method) -> Selector | None:
        """The model selection of `method`'s own training run (pass it to `train`): the budget's
        criterion for a method whose authors keep `method.selection`, scored by the method's maps
        (or logits) on the validation split. None: the run keeps its last epoch."""
        criterion = self.budget.criterion(method.selection)
        if criterion == "last":
            self.selection["method"] = {"criterion": "last"}
            return None

        def score():
            return evaluate(method, self.splits.val, self.dataset, self.budget, self.device)[0]

        selector = Selector(score, {criterion: self.selection_metric(criterion)}, every=self.budget.val_every)
        self.selection["method"] = selector  # summarised when the entry is written
        return selector

    def selection_record(self) -> dict:
        """The entry's `selection`: what each training run of the cell kept."""
        out = dict(self.selection)
        if isinstance(out.get("method"), Selector):
            out["method"] = out["method"].summary()
        return out

    def stage1_key(self) -> dict:
        b, run = self.budget, self.budget.stage1_schedule()
        key = {"dataset": self.dataset.name, "dataset_config": to_jsonable(self.dataset.cfg),
               "backbone": self.backbone, "backbone_arch": backbone_fingerprint(self.backbone),
               "weights": file_sha256(self.weights), "seed": self.seed,
               "epochs": run.epochs, "batch_size": b.batch_size, "lr": run.lr, "wd": run.weight_decay,
               "momentum": b.momentum, "max_train_images": b.max_train_images, "input_size": b.input_size,
               "crop_from": b.crop_from, "mixed_precision": b.mixed_precision,
               "data": self.dataset.fingerprint(self.settings.data_root)}
        if run.step_every is not None:  # cosine runs keep the keys (and caches) from before step decay
            key["lr_step"] = [run.step_every, run.gamma]
        return key

    def stage1_path(self, criterion: str = "last") -> tuple[Path, dict]:
        """The cache file of the stage-1 checkpoint kept by `criterion` and its key. The last
        epoch's keeps the key it had before model selection existed; a best-* checkpoint's key
        adds the criterion, its metric and the validation interval (caches never mix)."""
        key = self.stage1_key()
        if criterion != "last":
            key = {**key, "checkpoint": criterion, "val_metric": self.selection_metric(criterion),
                   "val_every": self.budget.val_every}
        folder = self.cache_dir / "stage1" / self.dataset.name
        return folder / f"{self.backbone}-seed{self.seed}-{config_hash(key)}.pt", key

    def classifier(self, checkpoint: str = "last") -> WSOLNet:
        """The shared stage-1 CAM classifier for this dataset x backbone x seed, trained once
        and cached on disk (loaded with weights_only=True): its `checkpoint` ("last",
        "best-loc": best validation localization of its fc-CAM, "best-cls": best validation
        Top-1), the budget's criterion for a reader whose authors' default is `checkpoint`
        (`Budget.criterion`: "last" when the budget never validates). A run that validates
        caches all three checkpoints at once."""
        criterion = self.budget.criterion(checkpoint)
        path, _ = self.stage1_path(criterion)
        last_path, last_key = self.stage1_path("last")
        model = self.new_classifier()
        # One process trains it, the others wait and load it (--jobs, job arrays); the caller's
        # random state is the same whether it was trained here or loaded, so a cell's result
        # does not depend on which cell of the grid happened to train the classifier.
        with file_lock(last_path.with_name(last_path.name + ".lock")), preserved_rng():
            state = load_checked_checkpoint(path, self.device)
            if state is None:
                start = time.perf_counter()
                seed_everything(self.seed)
                # initialised after seeding: the same weights whichever reader trains it first
                model = self.new_classifier()
                selector = None
                if self.budget.val_every is not None:
                    stage1_cam = _ClassifierCAM(model)
                    selector = Selector(
                        lambda: evaluate(stage1_cam, self.splits.val, self.dataset, self.budget, self.device)[0],
                        {c: self.selection_metric(c) for c in ("best-loc", "best-cls")}, every=self.budget.val_every)
                train(model, model.parameters(), self.splits.train, self.budget, self.device,
                      self.budget.stage1_schedule(), self.seed,
                      desc=f"stage-1 {self.dataset.name}/{self.backbone}/seed{self.seed}",
                      selector=selector)
                epochs = self.budget.stage1_schedule().epochs
                if selector is None:
                    save_checked_checkpoint(last_path, {"state_dict": model.state_dict(), "key": last_key,
                                                        "selection": {"criterion": "last", "epoch": epochs,
                                                                      "epochs": epochs}})
                else:
                    for kept in SELECTION_CRITERIA:
                        kept_path, kept_key = self.stage1_path(kept)
                        save_checked_checkpoint(kept_path, {"state_dict": selector.states[kept], "key": kept_key,
                                                            "selection": selector.summary(kept)})
                self.timings["stage1_s"] = round(time.perf_counter() - start, 3)
                state = load_checked_checkpoint(path, self.device)
                if state is None:
                    raise OSError(f"stage-1 checkpoint {path} was not written or does not load back")
            model.load_state_dict(state["state_dict"])
        self.selection.setdefault("stage1", {})[criterion] = state.get("selection", {"criterion": "last"})
        model.eval()
        return model


def save_checked_checkpoint(path: Path, obj) -> None:
    """Save `obj` atomically with its sha256 beside it (`<file>.sha256`, written last)."""
    atomic_torch_save(path, obj)
    atomic_write_text(checksum_path(path), file_sha256(path) + "\n")


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def load_checked_checkpoint(path: Path, device) -> dict | None:
    """A cached checkpoint if it is there and intact (its checksum matches and it loads with
    weights_only=True); a damaged one is named, removed and None returned, so it is retrained."""
    if not path.is_file():
        return None
    expected = checksum_path(path).read_text().strip() if checksum_path(path).is_file() else None
    reason = None
    if expected != file_sha256(path):
        reason = "no checksum beside it" if expected is None else "its checksum does not match"
    else:
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                return state
            reason = "it holds no state_dict"
        except Exception as err:  # truncated or foreign file: retrain rather than fail every rerun
            reason = f"it does not load ({type(err).__name__}: {err})"
    log.warning("cache file %s is damaged (%s): removed, retraining", path, reason)
    path.unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)
    return None


class _ClassifierCAM:
    """The stage-1 classifier read as the `cam` method reads it (fc-CAM of the localization
    class, and its logits): what its validation scores."""

    name = "stage-1 classifier"

    def __init__(self, model: WSOLNet):
        self.model = model

    def localize(self, images, labels) -> Localization:
        out = self.model(images)
        return Localization(self.model.cam(out.features, labels), out.logits)


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


def score_splits(method, splits, dataset, budget: Budget, device: torch.device, with_val: bool,
                 samples: SampleCollector | None = None) -> tuple[dict, dict | None, dict]:
    """A cell's scoring: (test metrics, validation metrics or None, test curves). On a mask
    dataset the validation pass runs first (Dice / mIoU take its best threshold); elsewhere it
    runs after the test pass, and only `with_val` (for model selection: `bench sweep`), so a
    method that draws random numbers at inference (Smooth-GradCAM++) gives the same test metrics
    either way."""
    tau = val_metrics = None
    if dataset.annotation == "mask":
        val_metrics, _ = evaluate(method, splits.val, dataset, budget, device)
        tau = val_metrics["best_tau"]
    metrics, curves = evaluate(method, splits.test, dataset, budget, device, tau=tau, samples=samples)
    if val_metrics is None and with_val:
        val_metrics, _ = evaluate(method, splits.val, dataset, budget, device)
    return metrics, val_metrics, curves


def check_finite(metrics: dict) -> None:
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"metrics not finite: {', '.join(bad)}")


def result_path(results_dir: Path, dataset: str, method: str, seed: int) -> Path:
    return Path(results_dir) / dataset / method / f"seed{seed}.json"


def cell_config(method_cls, method_cfg, dataset, seed: int, settings: RunSettings) -> dict:
    """What a cell's result depends on (its hash resumes the grid); the budget as the cell trains
    with it (`resolve_budget`: the `paper` budget with the dataset's published schedules)."""
    budget = resolve_budget(settings.budget, dataset, settings.backbone)
    config = {"method": method_cls.name, "method_config": to_jsonable(method_cfg), "dataset": dataset.name,
              "dataset_config": to_jsonable(dataset.cfg), "data": dataset.fingerprint(settings.data_root),
              "budget": to_jsonable(budget), "seed": seed, "backbone": settings.backbone,
              "backbone_arch": backbone_fingerprint(settings.backbone),
              "weights": file_sha256(settings.backbone_weights())}
    preset = paper_preset(method_cls, dataset.name, settings.budget.name)
    if preset:  # the authors' configuration this cell took (its values are in method_config too)
        config["paper_preset"] = preset
    return config


def _new_record(method_cls, method_cfg, dataset, seed: int, settings: RunSettings) -> dict:
    """The fields every entry of a cell has, whatever its outcome."""
    config = cell_config(method_cls, method_cfg, dataset, seed, settings)
    record = {
        "schema": RESULT_SCHEMA, "method": method_cls.name, "dataset": dataset.name, "seed": seed,
        "budget": settings.budget.name, "backbone": settings.backbone, "task": dataset.task,
        "primary_metric": dataset.primary_metric, "config": config, "config_hash": config_hash(config),
        "code_version": {"wsolbench": bench.__version__, "git": git_version(Path(__file__).parent.parent),
                         "method_file_sha256": method_file_sha256(method_cls)},
        "torch": torch.__version__, "device": device_name(settings.torch_device), "extension": bench.EXTENSION_FLAVOUR,
    }
    if settings.submission is not None:
        record["submission"] = settings.submission
    if method_cls.supervision != "weak":  # a reference row of stronger supervision, never ranked with the rest
        record["supervision"] = method_cls.supervision
    if needs_pretrained(dataset, settings):  # allowed by --random-init: off the protocol
        record["random_init"] = True
    return record


def record_failure(cell, settings: RunSettings, error: str) -> dict:
    """Write the failed entry of a cell that could not record itself (its worker process died)."""
    method_cls, method_cfg, dataset = cell.build(settings.budget.name)
    record = _new_record(method_cls, method_cfg, dataset, cell.seed, settings)
    record.update(status="failed", metrics={}, error=error, timings={},
                  finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    results_dir = cell.results_in(settings)
    with results_lock(results_dir):
        return write_entry(results_dir, result_path(results_dir, dataset.name, method_cls.name, cell.seed), record)


def random_init_refusal(dataset, settings: RunSettings) -> str | None:
    """Why a cell must not start: the `paper` budget on a real dataset starts its backbone from
    ImageNet weights (docs/protocol.md, "Backbones"); without a weights file it runs only with
    `--random-init`, and its entry is then marked (`random_init`). None: it may start."""
    if not needs_pretrained(dataset, settings) or settings.random_init:
        return None
    from bench.models import weight_file_names

    return (f"{dataset.name}: the paper budget starts {settings.backbone} from ImageNet weights, and none was found "
            f"(--weights FILE, or --weights-dir DIR / $WSOLBENCH_WEIGHTS holding one of "
            f"{', '.join(weight_file_names(settings.backbone))}); pass --random-init to run from random weights "
            f"(the entries are marked off-protocol)")


def needs_pretrained(dataset, settings: RunSettings) -> bool:
    return (settings.budget.name == "paper" and not getattr(dataset, "synthetic", False)
            and settings.backbone_weights() is None)


def run_cell(cell, settings: RunSettings) -> dict:
    """Run one cell (a `bench.grid.Cell`) and write its sealed entry (and its small artifacts for
    the report) atomically; a failure is recorded, not raised. `settings.submission` (from
    `bench submit`) is stored in the entry: whether it ran under the protocol and, if not, why.
    A cell that may not start (`random_init_refusal`) raises ValueError and writes nothing."""
    method_cls, method_cfg, dataset = cell.build(settings.budget.name)
    seed, device, results_dir = cell.seed, settings.torch_device, cell.results_in(settings)
    refusal = random_init_refusal(dataset, settings)
    if refusal:
        raise ValueError(refusal)
    budget = resolve_budget(settings.budget, dataset, settings.backbone)
    path = result_path(results_dir, dataset.name, method_cls.name, seed)
    record = _new_record(method_cls, method_cfg, dataset, seed, settings)
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
        collector = SampleCollector(sample_indices(len(splits.test)))
        metrics, val_metrics, curves = score_splits(method, splits, dataset, budget, device, settings.val_metrics,
                                                    samples=collector)
        timings["eval_s"] = round(time.perf_counter() - t0, 3)
        check_finite(metrics)
        artifacts = (collector, curves)
        record.update(status="ok", metrics=metrics, selection=ctx.selection_record(), error=None)
        if val_metrics is not None:
            record["val_metrics"] = val_metrics
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
