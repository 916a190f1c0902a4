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


def backbone_layers(model, table: dict[str, tuple[str, ...]], method: str) -> list:
    """The backbone modules a method taps, by the backbone's class name in `table` (dotted
    paths inside `model.backbone`); a backbone the table does not know is a clear error."""
    kind = type(model.backbone).__name__
    if kind not in table:
        raise ValueError(f"{method}: no layer positions for backbone {kind}; known: {', '.join(sorted(table))}")
    return [model.backbone.get_submodule(path) for path in table[kind]]


@contextlib.contextmanager
def layer_transforms(modules, transform):
    """While active, each module's output is replaced by `transform(output)` when the module is
    in training mode (identity in eval mode). The hooks are removed on exit."""

    def hook(module, inputs, output):
        return transform(output) if module.training else None

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def layer_outputs(modules):
    """Yield a list whose i-th entry is the output of `modules[i]` in the last forward pass run
    inside the block (the hooks are removed on exit)."""
    store: list = [None] * len(modules)

    def make(i):
        def hook(module, inputs, output):
            store[i] = output
        return hook

    handles = [m.register_forward_hook(make(i)) for i, m in enumerate(modules)]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def width_for(model, width: int | None, reference: int) -> int:
    """A head width: `width` when set, else the reference width scaled by the backbone's
    `decoder_width_scale` (1 for the papers' backbones; small CPU backbones scale it down)."""
    if width is not None:
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        return width
    return max(1, round(reference * getattr(model.backbone, "decoder_width_scale", 1.0)))
