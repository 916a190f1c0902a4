"""One cell of the transfer track: (adaptation, source dataset, target dataset, seed).

1. The source model: the stage-1 CAM classifier of the source dataset (trained once and
   cached, the same cache as the grid's), or the model of a `source_method` that exposes one
   (`method.model` after `fit`). The source training split is wrapped in a `ReadGuard`,
   sealed as soon as the source model exists: from then on any read of it raises.
2. Adaptation of a copy of it on the target's training images, through an `UnlabelledView`
   (labels, masks and boxes raise).
3. Evaluation on the target's test split with the target's metrics (`bench.runner.score_splits`;
   mask datasets: the Dice / mIoU threshold from the target's validation split, as in a grid
   cell; PxAP needs none). Validation metrics are always recorded (a grid cell on a box or
   video dataset records them only when the run asks).

The two reference rows of a pair: `source-only` (the `SourceOnly` adaptation: no
adaptation, the lower reference) and `target-supervised` (`run_target_supervised`: the
target's own stage-1 classifier trained on its labelled training split, the upper
reference). Entries are sealed with `bench.entries.write_entry` under
`<results>/transfer/<source>__<target>/<adaptation>/seed<k>.json`."""
from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import time
import traceback
from pathlib import Path

import torch

import bench
from bench.config import Budget, config_hash, resolve_budget, to_jsonable
from bench.entries import RESULT_SCHEMA, TRANSFER_FOLDER, file_sha256, method_file_sha256, write_entry
from bench.grid import is_finished
from bench.runner import (RunContext, check_finite, device_name, git_version, preserved_rng, score_splits,
                          seed_everything)
from bench.settings import RunSettings
from bench.transfer.adaptation import AdaptContext, Adaptation, SourceOnly
from bench.transfer.data import LabelAccessError, ReadGuard, SourceAccessError, UnlabelledView

log = logging.getLogger(__name__)

TARGET_SUPERVISED = "target-supervised"
TRACK = TRANSFER_FOLDER


def pair_name(source: str, target: str) -> str:
    return f"{source}__{target}"


def transfer_result_path(results_dir: Path, source: str, target: str, adaptation: str, seed: int) -> Path:
    return Path(results_dir) / TRACK / pair_name(source, target) / adaptation / f"seed{seed}.json"


def transfer_cell_config(adaptation_name: str, adaptation_cfg, source, target, budget: Budget, seed: int,
                         backbone: str, weights, source_method=None, source_method_cfg=None) -> dict:
    """What a transfer cell's result depends on (its hash resumes the track)."""
    return {"track": TRACK, "adaptation": adaptation_name, "adaptation_config": to_jsonable(adaptation_cfg),
            "source": source.name, "source_config": to_jsonable(source.cfg),
            "source_budget": to_jsonable(resolve_budget(budget, source, backbone)),
            "source_model": "stage1-cam" if source_method is None else source_method.name,
            "source_model_config": None if source_method is None else to_jsonable(source_method_cfg),
            "target": target.name, "target_config": to_jsonable(target.cfg),
            "budget": to_jsonable(resolve_budget(budget, target, backbone)), "seed": seed,
            "backbone": backbone, "weights": file_sha256(weights)}


def cell_identity(name: str, source, target, seed: int, settings: RunSettings, adaptation_cls=None,
                  adaptation_cfg=None, source_method=None, source_method_cfg=None) -> tuple[dict, str | None, Path]:
    """(config, code hash, entry path) of the cell `name` (an adaptation's, or TARGET_SUPERVISED's
    with `adaptation_cls` None): what resumes it and what its entry records."""
    config = transfer_cell_config(name, adaptation_cfg, source, target, settings.budget, seed, settings.backbone,
                                  settings.backbone_weights(), source_method, source_method_cfg)
    code = file_sha256(__file__) if adaptation_cls is None else method_file_sha256(adaptation_cls)
    return config, code, transfer_result_path(settings.results_dir, source.name, target.name, name, seed)


def finished_transfer_entry(name: str, source, target, seed: int, settings: RunSettings,
                            adaptation_cls=None, adaptation_cfg=None) -> dict | None:
    """The finished entry of a cell in `settings.results_dir` (as the grid resumes one), or None."""
    config, code, path = cell_identity(name, source, target, seed, settings, adaptation_cls, adaptation_cfg)
    return _finished(path, config, code)


def record_transfer_failure(name: str, source, target, seed: int, settings: RunSettings, error: str,
                            adaptation_cls=None, adaptation_cfg=None) -> dict:
    """Write the failed entry of a cell that could not record itself (its worker process died)."""
    config, code, path = cell_identity(name, source, target, seed, settings, adaptation_cls, adaptation_cfg)
    tbudget = resolve_budget(settings.budget, target, settings.backbone)
    record = _record(name, source, target, tbudget, seed, settings.backbone, config, code, settings.torch_device)
    record.update(status="failed", metrics={}, error=error)
    return _finish(record, {}, time.perf_counter(), settings.results_dir, path)


def _finished(path: Path, config: dict, code_sha256: str | None) -> dict | None:
    """The finished entry at `path` for `config`, as the grid resumes one (`is_finished`)."""
    if not is_finished(path, config_hash(config), code_sha256):
        return None
    return json.loads(path.read_text())


def _record(name: str, source, target, budget: Budget, seed: int, backbone: str, config: dict, code_file,
            device) -> dict:
    return {"schema": RESULT_SCHEMA, "track": TRACK, "method": name, "dataset": target.name,
            "source": source.name, "target": target.name, "seed": seed, "budget": budget.name,
            "backbone": backbone, "task": target.task, "primary_metric": target.primary_metric,
            "config": config, "config_hash": config_hash(config),
            "code_version": {"wsolbench": bench.__version__, "git": git_version(Path(__file__).parents[2]),
                             "method_file_sha256": code_file},
            "torch": torch.__version__, "device": device_name(device), "extension": bench.EXTENSION_FLAVOUR}


def _evaluate(localizer, splits, dataset, budget, device) -> tuple[dict, dict]:
    """(test metrics, validation metrics): scored as a grid cell is, always with validation."""
    metrics, val_metrics, _ = score_splits(localizer, splits, dataset, budget, device, with_val=True)
    check_finite(metrics)
    return metrics, val_metrics


def _source_model(source, seed, settings: RunSettings, source_method, source_method_cfg,
                  timings) -> tuple[torch.nn.Module, ReadGuard]:
    """The source model and the sealed guard over the source training split."""
    sbudget = resolve_budget(settings.budget, source, settings.backbone)
    splits = source.splits(settings.data_root, sbudget)
    guard = ReadGuard(splits.train, f"{source.name} (source) training split")
    splits.train = guard
    ctx = RunContext(settings=settings, budget=sbudget, seed=seed, dataset=source, splits=splits, timings=timings)
    t0 = time.perf_counter()
    if source_method is None:
        model = ctx.classifier()
    else:
        method = source_method(source_method_cfg)
        with preserved_rng():
            method.fit(splits.train, splits.val, ctx)
        model = getattr(method, "model", None)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"source method {source_method.name} exposes no `model` after fit; a transfer source "
                            f"needs one (a WSOLNet-like classifier: features, classifier, cam)")
    timings["source_s"] = round(time.perf_counter() - t0, 3)
    guard.seal()
    return model, guard


def run_transfer_cell(adaptation_cls, source, target, seed: int, settings: RunSettings, *, adaptation_cfg=None,
                      source_method=None, source_method_cfg=None, write: bool = True) -> dict:
    """Run one transfer cell (see the module doc) and return its record, sealed and written
    under `settings.results_dir` (unless `write` is False), or the finished entry there (resume).
    `source` and `target` are dataset plugin instances (prepared: `dataset.prepare(data_root)`).
    A failure is recorded, not raised, except a read of source data or target labels, which is
    a bug of the adaptation."""
    budget, backbone, device = settings.budget, settings.backbone, settings.torch_device
    adaptation_cfg = adaptation_cfg if adaptation_cfg is not None else adaptation_cls.Config()
    config, code, path = cell_identity(adaptation_cls.name, source, target, seed, settings, adaptation_cls,
                                       adaptation_cfg, source_method, source_method_cfg)
    results_dir = settings.results_dir if write else None
    path = path if write else None
    if path is not None:
        done = _finished(path, config, code)
        if done is not None:
            return done
    tbudget = resolve_budget(budget, target, backbone)
    record = _record(adaptation_cls.name, source, target, tbudget, seed, backbone, config, code, device)
    if source.num_classes != target.num_classes:
        raise ValueError(f"transfer {source.name} -> {target.name}: {source.num_classes} source classes, "
                         f"{target.num_classes} target classes; a pair shares its classes")
    timings: dict = {}
    start = time.perf_counter()
    try:
        seed_everything(seed)
        source_model, guard = _source_model(source, seed, settings, source_method, source_method_cfg, timings)
        splits = target.splits(settings.data_root, tbudget)
        view = UnlabelledView(splits.train)
        adaptation = adaptation_cls(adaptation_cfg)
        why = adaptation_cls.skip(source_model)
        if why is not None:
            raise ValueError(f"{adaptation_cls.name} cannot adapt this source model: {why}")
        ctx = AdaptContext(device=device, budget=tbudget, seed=seed, num_classes=target.num_classes,
                           source=source.name, target=target.name, timings=timings, log=log)
        t0 = time.perf_counter()
        seed_everything(seed)
        model = adaptation.adapt(copy.deepcopy(source_model).to(device), view, ctx)
        adaptation.model = model.eval()
        timings["adapt_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        metrics, val_metrics = _evaluate(adaptation, splits, target, tbudget, device)
        timings["eval_s"] = round(time.perf_counter() - t0, 3)
        record.update(status="ok", metrics=metrics, val_metrics=val_metrics, error=None,
                      target_train_reads=view.reads, source_reads_before_adaptation=guard.reads)
    except (KeyboardInterrupt, LabelAccessError, SourceAccessError):
        raise
    except Exception as err:  # one failing cell is recorded and the track goes on
        log.error("transfer cell %s %s->%s seed%d failed: %s", adaptation_cls.name, source.name, target.name,
                  seed, err)
        record.update(status="failed", metrics={}, error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc(limit=20))
    return _finish(record, timings, start, results_dir, path)


def _finish(record, timings, start, results_dir, path) -> dict:
    timings["total_s"] = round(time.perf_counter() - start, 3)
    record["timings"] = timings
    record["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if path is None:
        return record
    return write_entry(results_dir, path, record)


class _TargetCAM(Adaptation):
    name = TARGET_SUPERVISED


def run_target_supervised(source, target, seed: int, settings: RunSettings, *, write: bool = True) -> dict:
    """The upper reference of a pair: the target's stage-1 CAM classifier, trained on the
    target's LABELLED training split (the grid's cached classifier), evaluated like a transfer
    cell. Stored beside the pair's adaptations as `target-supervised`."""
    budget, backbone, device = settings.budget, settings.backbone, settings.torch_device
    config, code, path = cell_identity(TARGET_SUPERVISED, source, target, seed, settings)
    results_dir = settings.results_dir if write else None
    path = path if write else None
    if path is not None:
        done = _finished(path, config, code)
        if done is not None:
            return done
    tbudget = resolve_budget(budget, target, backbone)
    record = _record(TARGET_SUPERVISED, source, target, tbudget, seed, backbone, config, code, device)
    timings: dict = {}
    start = time.perf_counter()
    try:
        seed_everything(seed)
        splits = target.splits(settings.data_root, tbudget)
        ctx = RunContext(settings=settings, budget=tbudget, seed=seed, dataset=target, splits=splits, timings=timings)
        t0 = time.perf_counter()
        localizer = _TargetCAM()
        localizer.model = ctx.classifier()
        timings["adapt_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        metrics, val_metrics = _evaluate(localizer, splits, target, tbudget, device)
        timings["eval_s"] = round(time.perf_counter() - t0, 3)
        record.update(status="ok", metrics=metrics, val_metrics=val_metrics, error=None)
    except KeyboardInterrupt:
        raise
    except Exception as err:
        log.error("target-supervised %s seed%d failed: %s", target.name, seed, err)
        record.update(status="failed", metrics={}, error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc(limit=20))
    return _finish(record, timings, start, results_dir, path)


def run_source_only(source, target, seed: int, settings: RunSettings, **kw) -> dict:
    """The lower reference of a pair: `run_transfer_cell` with `SourceOnly`."""
    return run_transfer_cell(SourceOnly, source, target, seed, settings, **kw)
