"""Source-free adaptation methods: the base class, what they get (`AdaptContext`), their
training loop and their registry.

An adaptation subclasses `Adaptation` in one small file of `adaptations/` (repository root)
and registers itself with `@register_adaptation`:

- `adapt(model, target_train, ctx) -> model`: adapt a copy of the source model to the target,
  from the target's training images only (`target_train` is an `UnlabelledView`: items hold
  `image` and `index`; labels, masks and boxes raise). The source data is out of reach.
- `localize(images, labels) -> Localization`: as a `bench.method.Method`; by default the CAM
  of the adapted model (the source is a CAM classifier) for the evaluated class.

Adaptations are a registry of their own, not `methods/` plugins: a method trains on a
labelled split, an adaptation never sees one, and the grid must not run an adaptation as a
WSOL method on one dataset (nor a WSOL method as an adaptation)."""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from bench.config import Budget, EmptyConfig
from bench.method import Localization
from bench.registry import REPO_ROOT, Registry, load_plugin_file
from bench.transfer.data import collate_unlabelled

log = logging.getLogger(__name__)

def adaptation_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("WSOLBENCH_ADAPTATIONS", "").split(os.pathsep) if p]
    return [REPO_ROOT / "adaptations", *extra]


def load_adaptations() -> None:
    for folder in adaptation_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.py")):
                if not path.name.startswith("_"):
                    load_plugin_file(path)


ADAPTATIONS = Registry("adaptation", load_adaptations)


def register_adaptation(cls):
    return ADAPTATIONS.register(cls)


def get_adaptation(name: str) -> type:
    return ADAPTATIONS.get_or_raise(name)


def all_adaptations() -> dict[str, type]:
    return ADAPTATIONS.all()


@dataclass
class AdaptContext:
    """What an adaptation gets besides the model and the unlabelled target images."""

    device: torch.device
    budget: Budget
    seed: int
    num_classes: int
    source: str  # dataset names, for logs
    target: str
    timings: dict = field(default_factory=dict)
    log: logging.Logger = log

    def loader(self, view, shuffle: bool, drop_last: bool = False):
        generator = torch.Generator().manual_seed(self.seed)
        return torch.utils.data.DataLoader(
            view, batch_size=self.budget.batch_size, shuffle=shuffle, generator=generator,
            collate_fn=collate_unlabelled, num_workers=self.budget.num_workers,
            drop_last=drop_last and len(view) > self.budget.batch_size,
            persistent_workers=self.budget.num_workers > 0, pin_memory=self.device.type == "cuda")


class Adaptation:
    name: str = ""
    Config = EmptyConfig

    def __init__(self, cfg=None):
        self.cfg = cfg if cfg is not None else self.Config()
        self.model = None

    @classmethod
    def skip(cls, model) -> str | None:
        """Why this adaptation cannot adapt `model` (None when it can)."""
        return None

    def adapt(self, model: torch.nn.Module, target_train, ctx: AdaptContext) -> torch.nn.Module:
        raise NotImplementedError

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> Localization:
        with torch.no_grad():
            out = self.model(images)
            return Localization(self.model.cam(out.features, labels), out.logits)


class SourceOnly(Adaptation):
    """The lower reference: the source model as it is."""

    name = "source-only"

    def adapt(self, model, target_train, ctx):
        return model


def freeze_hypothesis(model) -> None:
    """Freeze the classifier head (SHOT's "source hypothesis"): only the encoder adapts."""
    for p in model.classifier.parameters():
        p.requires_grad_(False)


def adapt_loop(model: torch.nn.Module, view, ctx: AdaptContext, step: Callable, *, lr: float | None = None,
               params=None, before_epoch: Callable[[int], None] | None = None, desc: str = "adapt") -> dict:
    """SGD with Nesterov momentum over the unlabelled target images for the budget's
    `method_epochs` at the method schedule (`budget.method_schedule(lr)`: cosine annealing
    over the steps, or the papers' step decay), as `bench.method.training.train` runs a method's own
    training. `step(model, images, index, progress)` returns a scalar or a dict of named terms
    (summed); progress = steps done / total steps, in [0, 1). `before_epoch(epoch)` runs first
    in every epoch (pseudo-labels, clustering). A loss without gradient (no usable term in the
    batch) skips the update. Returns the mean of each term over the last epoch."""
    schedule = ctx.budget.method_schedule(lr)
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    if not params:
        raise ValueError(f"{desc}: no trainable parameters")
    optimizer = torch.optim.SGD(params, lr=schedule.lr, momentum=ctx.budget.momentum, nesterov=True,
                                weight_decay=schedule.weight_decay)
    loader = ctx.loader(view, shuffle=True, drop_last=True)
    total = max(1, schedule.epochs * len(loader))
    if schedule.step_every is None:
        per_batch, per_epoch = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), None
    else:
        per_batch, per_epoch = None, torch.optim.lr_scheduler.StepLR(optimizer, schedule.step_every, schedule.gamma)
    done = 0
    terms: dict[str, float] = {}
    with tqdm(total=total, desc=desc, leave=False, unit="batch", dynamic_ncols=True) as bar:
        for epoch in range(schedule.epochs):
            if before_epoch is not None:
                before_epoch(epoch)
            model.train()
            sums: dict = {}
            for batch in loader:
                images = batch["image"].to(ctx.device, non_blocking=True)
                index = batch["index"].to(ctx.device, non_blocking=True)
                out = step(model, images, index, done / total)
                parts = out if isinstance(out, dict) else {"loss": out}
                loss = sum(parts.values())
                if torch.is_tensor(loss) and loss.requires_grad:
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                if per_batch is not None:
                    per_batch.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else v)
                done += 1
                bar.update(1)
            terms = {k: float(v) / max(1, len(loader)) for k, v in sums.items()}
            if not all(map(math.isfinite, terms.values())):
                raise FloatingPointError(f"{desc}: loss not finite in epoch {epoch}: {terms}")
            ctx.log.debug("%s epoch %d: %s", desc, epoch, terms)
            if per_epoch is not None:
                per_epoch.step()
    model.eval()
    return terms
