"""The training loop shared by the stage-1 classifier and every method that trains (SGD, the
budget's schedules, progress bar, finite-loss check, model selection on the validation split)."""
from __future__ import annotations

import contextlib
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench.config import SELECTION_CRITERIA, TrainSchedule
from bench.dataset.base import make_loader

log = logging.getLogger(__name__)


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def classification_loss(model, images, labels):
    return F.cross_entropy(model(images).logits, labels)


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


@dataclass
class Selector:
    """Model selection on the validation split (docs/protocol.md, "Model selection"): `train`
    calls `validate` before the first epoch and after every `every`-th epoch and the last one.
    `score()` returns the validation metrics of the model as it is now; for each criterion of
    `metrics` (criterion -> metric name, higher is better) the model's state at the first
    validation with the highest value is kept on the CPU (and the last epoch's, as "last").
    When training ends the model is left in the state of `keep` (default: the first criterion)."""

    score: Callable[[], dict]
    metrics: dict
    every: int = 1
    keep: str | None = None
    epochs: int | None = None  # the run's length (set by `train`)
    history: list = field(default_factory=list)  # [epochs trained, {metric: value}] per validation
    best: dict = field(default_factory=dict)  # criterion -> (epochs trained, value)
    states: dict = field(default_factory=dict)  # criterion -> state_dict on the CPU

    def __post_init__(self):
        bad = [c for c in self.metrics if c not in SELECTION_CRITERIA[1:]]
        if not self.metrics or bad:
            raise ValueError(f"Selector: criteria must be among {', '.join(SELECTION_CRITERIA[1:])}, "
                             f"got {', '.join(map(repr, self.metrics)) or 'none'}")
        if self.every < 1:
            raise ValueError(f"Selector: every must be >= 1, got {self.every}")
        self.keep = self.keep or next(iter(self.metrics))
        if self.keep not in self.metrics:
            raise ValueError(f"Selector: keep {self.keep!r} is not one of its criteria {', '.join(self.metrics)}")

    def due(self, epochs_done: int, epochs: int) -> bool:
        return epochs_done % self.every == 0 or epochs_done == epochs

    def validate(self, model: torch.nn.Module, epochs_done: int) -> dict:
        was_training = model.training
        # the validation pass leaves the random state as it found it: the training run (and so
        # the last epoch's model) is the same whether or not it is validated
        with preserved_rng(), torch.no_grad():
            model.eval()
            metrics = self.score()
        model.train(was_training)
        missing = [m for m in self.metrics.values() if m not in metrics]
        if missing:
            raise KeyError(f"model selection: the validation metrics have no {', '.join(map(repr, missing))} "
                           f"(got {', '.join(metrics) or 'none'})")
        values = {m: float(metrics[m]) for m in dict.fromkeys(self.metrics.values())}
        self.history.append([epochs_done, values])
        state = None
        if epochs_done == self.epochs:  # the last epoch's state too, for who reads "last"
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            self.states["last"] = state
        for criterion, metric in self.metrics.items():
            if criterion not in self.best or values[metric] > self.best[criterion][1]:  # ties keep the earliest
                self.best[criterion] = (epochs_done, values[metric])
                if state is None:
                    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                self.states[criterion] = state
        log.info("validation after %d epochs: %s", epochs_done, ", ".join(f"{m} {v:.3f}" for m, v in values.items()))
        return values

    def restore(self, model: torch.nn.Module, criterion: str | None = None) -> None:
        state = self.states.get(criterion or self.keep)
        if state is not None:
            model.load_state_dict(state)

    def summary(self, criterion: str | None = None) -> dict:
        """What an entry records for `criterion` (default `keep`): the criterion, its metric, the
        epoch kept (epochs trained, 0 = before training) of the run's `epochs`, its validation
        value, the validation interval and every validation's values."""
        criterion = criterion or self.keep
        if criterion == "last":
            return {"criterion": "last", "epoch": self.epochs, "epochs": self.epochs}
        epoch, value = self.best.get(criterion, (None, None))
        return {"criterion": criterion, "metric": self.metrics[criterion], "epoch": epoch, "epochs": self.epochs,
                "value": value, "every": self.every, "history": self.history}


def train(model: torch.nn.Module, params, train_set, budget, device: torch.device, schedule: TrainSchedule,
          seed: int, loss_fn: Callable = classification_loss, desc: str = "train",
          on_epoch_end: Callable[[int, dict], None] | None = None, loader=None,
          batch_keys: tuple[str, ...] = (), selector: Selector | None = None) -> dict:
    """SGD with Nesterov momentum (the budget's) for `schedule.epochs` epochs at the schedule's
    learning rate and weight decay: cosine annealing over the run's steps, or the papers' step
    decay (lr x gamma at the start of every `step_every`-th epoch). Runs come from the budget:
    `budget.stage1_schedule()`, `budget.method_schedule(lr)`.
    `loss_fn(model, images, labels, **extras)` returns a scalar or a dict of named terms
    (summed); `extras` are the batch entries named in `batch_keys` (e.g. the frame index or shot
    id of video frames), on the device. `loader` (re-iterable, with a length) replaces the
    default shuffled loader over `train_set` (e.g. batches of clips from a batch sampler).
    `selector` (None: the last epoch's model) validates the model during training and leaves
    the model in its best validated state. Returns the mean of each term over the last epoch."""
    params = [p for p in params if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=schedule.lr, momentum=budget.momentum, nesterov=True,
                                weight_decay=schedule.weight_decay)
    if loader is None:
        loader = make_loader(train_set, budget.batch_size, shuffle=True, seed=seed, num_workers=budget.num_workers,
                             drop_last=True, device=device)
    epochs = schedule.epochs
    total = max(1, epochs * len(loader))
    if schedule.step_every is None:  # stepped after every batch
        per_batch, per_epoch = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), None
    else:  # stepped after every epoch
        per_batch, per_epoch = None, torch.optim.lr_scheduler.StepLR(optimizer, schedule.step_every, schedule.gamma)
    model.train()
    if selector is not None:
        selector.epochs = epochs
        selector.validate(model, 0)
    terms: dict[str, float] = {}
    with tqdm(total=total, desc=desc, leave=False, unit="batch", dynamic_ncols=True) as bar:
        for epoch in range(epochs):
            sums: dict = {}
            for batch in loader:
                images = batch["image"].to(device, non_blocking=True)
                labels = batch["label"].to(device, non_blocking=True)
                extras = {k: batch[k].to(device, non_blocking=True) for k in batch_keys}
                with autocast(device, budget.mixed_precision):
                    out = loss_fn(model, images, labels, **extras)
                parts = out if isinstance(out, dict) else {"loss": out}
                loss = sum(parts.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if per_batch is not None:
                    per_batch.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v.detach()  # stays on device: no sync per step
                bar.update(1)
            terms = {k: float(v) / max(1, len(loader)) for k, v in sums.items()}
            if not all(map(math.isfinite, terms.values())):
                raise FloatingPointError(f"{desc}: loss not finite in epoch {epoch}: {terms}")
            bar.set_postfix(epoch=epoch, loss=f"{sum(terms.values()):.3f}")
            log.debug("%s epoch %d: %s", desc, epoch, terms)
            if on_epoch_end is not None:
                on_epoch_end(epoch, terms)
            if selector is not None and selector.due(epoch + 1, epochs):
                selector.validate(model, epoch + 1)
            if per_epoch is not None:
                per_epoch.step()
    if selector is not None:
        selector.restore(model)
    model.eval()
    return terms
