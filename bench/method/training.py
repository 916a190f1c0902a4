"""The training loop shared by the stage-1 classifier and every method that trains (SGD, the
budget's schedules, progress bar, finite-loss check)."""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench.config import TrainSchedule
from bench.dataset.base import make_loader

log = logging.getLogger(__name__)


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def classification_loss(model, images, labels):
    return F.cross_entropy(model(images).logits, labels)


def train(model: torch.nn.Module, params, train_set, budget, device: torch.device, schedule: TrainSchedule,
          seed: int, loss_fn: Callable = classification_loss, desc: str = "train",
          on_epoch_end: Callable[[int, dict], None] | None = None, loader=None,
          batch_keys: tuple[str, ...] = ()) -> dict:
    """SGD with Nesterov momentum (the budget's) for `schedule.epochs` epochs at the schedule's
    learning rate and weight decay: cosine annealing over the run's steps, or the papers' step
    decay (lr x gamma at the start of every `step_every`-th epoch). Runs come from the budget:
    `budget.stage1_schedule()`, `budget.method_schedule(lr)`.
    `loss_fn(model, images, labels, **extras)` returns a scalar or a dict of named terms
    (summed); `extras` are the batch entries named in `batch_keys` (e.g. the frame index or shot
    id of video frames), on the device. `loader` (re-iterable, with a length) replaces the
    default shuffled loader over `train_set` (e.g. batches of clips from a batch sampler).
    Returns the mean of each term over the last epoch."""
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
            if per_epoch is not None:
                per_epoch.step()
    model.eval()
    return terms
