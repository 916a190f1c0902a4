"""Base of the localizer + classifier methods (Max-Min uncertainty, Min-Max entropy).

`LocalizerMethod.fit` builds a `bench.models.wildcat.LocalizerClassifier` whose encoder and
classification head start from the shared stage-1 classifier (`init_from_stage1`, the stand-in
for the papers' pretrained encoder on the CPU budgets) or from scratch, and trains everything
jointly for the budget's method run (`ctx.budget.method_schedule()`) with the method's `losses` hook. Every loss term is logged
per epoch (INFO). `localize` returns the soft foreground mask and the classifier's logits on the
masked image, the papers' two outputs.

A method overrides `losses(out, labels) -> dict of named scalar terms` and, if it keeps state
across epochs (a log-barrier temperature), `start_epoch(epoch)`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from bench.config import FineTuneConfig
from bench.method.base import Localization, Method
from bench.models.wildcat import LocalizerClassifier, LocalizerOutput, apply_mask
from bench.method.training import train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalizerConfig(FineTuneConfig):
    """Settings common to the localizer + classifier methods (subclasses set the papers' values;
    `init_from_stage1` and `lr_factor` from `FineTuneConfig`)."""

    modalities: int = 5  # maps per class in the localizer head (WILDCAT)
    kmax: float = 0.3  # WILDCAT pooling: fraction of highest map values averaged
    kmin: float = 0.0  # WILDCAT pooling: fraction of lowest values (0: none)
    alpha: float = 0.6  # WILDCAT pooling: weight of the low term
    mask_w: float = 5.0  # mask = sigmoid(mask_w * (normalised map - mask_sigma))
    mask_sigma: float = 0.15
    scale: float = 1.0  # the classifier reads the masked image down-scaled by this factor
    dropout: float = 0.0  # WILDCAT dropout on the pooled values, both heads (training only)
    # the head that classifies x+ / x-: "wildcat" (the papers' second WILDCAT head with the same
    # hyper-parameters) or "linear" (the stage-1 classifier's GAP + linear head)
    classifier: str = "wildcat"

    def __post_init__(self):
        if self.mask_w <= 0:
            raise ValueError(f"{type(self).__name__}: mask_w must be > 0, got {self.mask_w}")
        if not 0.0 <= self.mask_sigma <= 1.0:
            raise ValueError(f"{type(self).__name__}: mask_sigma must be in [0, 1], got {self.mask_sigma}")
        super().__post_init__()


class LocalizerMethod(Method):
    """Localizer + classifier trained jointly; subclasses provide `losses`."""

    needs = ("cam-classifier",)
    Config = LocalizerConfig
    with_background = True  # whether `losses` reads the classifier's output on x-
    # Both papers' code keeps the epoch with the best validation classification (Max-Min:
    # deep-wsl-histo-min-max-uncertainty main.py; Min-Max entropy: train_deepmil.py); the stage-1
    # classifier they start from stands in for a pretrained encoder: its last epoch
    selection = "best-cls"

    def build_model(self, ctx) -> LocalizerClassifier:
        c = self.cfg
        # ctx.classifier() returns a fresh copy loaded from the cache: training it leaves the
        # cached stage-1 weights (and the other methods reading them) untouched
        net = ctx.classifier() if c.init_from_stage1 else ctx.new_classifier()
        return LocalizerClassifier(net, ctx.num_classes, modalities=c.modalities, kmax=c.kmax, kmin=c.kmin,
                                   alpha=c.alpha, w=c.mask_w, sigma=c.mask_sigma, scale=c.scale, dropout=c.dropout,
                                   classifier=c.classifier, **self.model_options(ctx)).to(ctx.device)

    def model_options(self, ctx) -> dict:
        """Method-specific `LocalizerClassifier` options (mask detaching, mask normalisation)."""
        return {}

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch (schedules)."""

    def losses(self, out: LocalizerOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def fit(self, train_set, val, ctx) -> None:
        self.dataset = getattr(ctx, "dataset", None)
        self.model = self.build_model(ctx)
        self.start_epoch(0)
        done = [0]

        def loss_fn(model, images, labels):
            return self.losses(model(images, with_background=self.with_background), labels)

        def on_epoch_end(epoch, terms):
            log.info("%s epoch %d: %s", self.name, epoch, ", ".join(f"{k}={v:.4f}" for k, v in terms.items()))
            done[0] = epoch + 1
            self.start_epoch(epoch + 1)

        schedule = ctx.budget.method_schedule(lr=ctx.budget.lr * self.cfg.lr_factor)
        selector = ctx.selector(self)
        train(self.model, self.model.parameters(), train_set, ctx.budget, ctx.device, schedule, ctx.seed,
              loss_fn=loss_fn, desc=f"{self.name} localizer", on_epoch_end=on_epoch_end, selector=selector)
        # the schedules (the mask's sigma) as at the kept epoch's last trained epoch (the references
        # update them after every epoch but the last)
        kept = done[0] if selector is None else selector.summary()["epoch"]
        self.start_epoch(max(0, kept - 1))
        self.model.eval()

    @property
    def logits_from_localizer(self) -> bool:
        """Whether the reported logits are the localizer head's scores (a loss that trains no
        classifier on x+) rather than the classifier's on the masked image."""
        return False

    def localize(self, images, labels):
        self.model.eval()
        with torch.no_grad():
            mask, scores = self.model.localize(images)
            if self.logits_from_localizer:
                return Localization(mask[:, 0], scores)
            fg, _ = apply_mask(images, mask, self.model.net.mean.to(images.dtype))
            logits = self.model.classify(fg)
        return Localization(mask[:, 0], logits)
