"""WSOL baselines that train their own classifier, then localize with a CAM.

`TrainedCAM.fit` builds a fresh classifier (`ctx.new_classifier()`, plus whatever
`build_model` adds), trains it with `bench.method.training.train` on `ctx.budget.stage1_schedule()`
(the run of the shared stage-1 CAM classifier, so every baseline gets the same effort as
CAM itself) with `training_loss` as the loss, inside `training_context` (for methods that
hook the model during training only), then `localize` reads `cams` with gradients off.

A method overrides one or two hooks:
- `training_loss(model, images, labels)`: a scalar or a dict of terms (default: cross-entropy);
- `cams(model, images, labels) -> (cams [B,h,w], logits [B,C])` (default: fc-CAM of the label);
- `build_model(ctx)` to add modules (extra branches or heads) to the classifier;
- `training_context(model)`: a context manager active during training only.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from bench.method.base import Localization, Method
from bench.method.training import train


class TrainedCAM(Method):
    """Train a classifier with a method-specific loss/augmentation, then localize by CAM."""

    needs: tuple[str, ...] = ()
    # wsolevaluation (the baselines' reference code) evaluates the last checkpoint by default
    # (main.py, --eval_checkpoint_type last)
    selection = "last"

    def build_model(self, ctx):
        return ctx.new_classifier()

    def training_context(self, model):
        return contextlib.nullcontext()

    def training_loss(self, model, images, labels):
        return F.cross_entropy(model(images).logits, labels)

    def fit(self, train_set, val, ctx) -> None:
        self.model = self.build_model(ctx).to(ctx.device)
        with self.training_context(self.model):
            train(self.model, self.model.parameters(), train_set, ctx.budget, ctx.device,
                  ctx.budget.stage1_schedule(), ctx.seed, loss_fn=self.training_loss, desc=f"{self.name} classifier",
                  selector=ctx.selector(self))
        self.model.eval()

    def localize(self, images, labels):
        self.model.eval()
        with torch.no_grad():
            cams, logits = self.cams(self.model, images, labels)
        return Localization(cams.detach(), None if logits is None else logits.detach())

    def cams(self, model, images, labels):
        out = model(images)
        return model.cam(out.features, labels), out.logits


@contextlib.contextmanager
def cam_layer_transform(model, transform):
    """While active, the output of `model.cam_layer` is replaced by `transform(output)` when
    that layer is in training mode (identity in eval mode). The hook is removed on exit."""

    def hook(module, inputs, output):
        return transform(output) if module.training else None

    handle = model.cam_layer.register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()
