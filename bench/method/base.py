"""The method plugin base. The base class owns the pipeline; a method overrides one or two hooks.

- `Method.fit(train, val, ctx)`: train what the method trains (default: nothing).
- `Method.localize(images, labels) -> Localization`: score maps [B,h,w] (any resolution,
  the evaluator resizes and normalises) and, when the method classifies, logits [B,C].
- `PostHocCAM`: methods that read the shared stage-1 classifier and only override `cams`.

`selection`: the checkpoint the method's authors keep of its own training run ("last",
"best-loc", "best-cls"; docs/protocol.md, "Model selection"); a method that trains passes
`ctx.selector(self)` to `bench.method.training.train`, which applies it when the budget validates.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.cams.gradients import autocast_trunk
from bench.config import EmptyConfig


@dataclass
class Localization:
    cams: torch.Tensor  # [B, h, w]
    logits: torch.Tensor | None = None  # [B, num_classes]


class Method:
    name: str = ""
    tasks: tuple[str, ...] = ("image",)
    needs: tuple[str, ...] = ()  # "cam-classifier": the shared stage-1 classifier
    # "weak" (image labels: the leaderboard's ranking), or the stronger supervision of a reference
    # row ("full", "few-shot"), shown apart and never ranked with the weak methods
    supervision: str = "weak"
    in_grid: bool = True  # False: `run --all` leaves it out (run it by name), e.g. for its cost
    # small settings the generic plugin test runs it with (cost only, never behaviour: benchopt's
    # test parameters), as `--set` strings
    test_settings: dict[str, str] = {}
    selection: str = "last"  # the authors' checkpoint of the method's own training (see above)
    Config = EmptyConfig

    def __init__(self, cfg=None):
        self.cfg = cfg if cfg is not None else self.Config()

    @classmethod
    def skip(cls, dataset) -> str | None:
        """Why this method cannot run on `dataset` (None when it can)."""
        if dataset.task not in cls.tasks:
            return f"{cls.name} handles {'/'.join(cls.tasks)} tasks, {dataset.name} is a {dataset.task} dataset"
        return None

    def fit(self, train, val, ctx) -> None:
        """Train on `train` (weak labels) with `val` for model selection."""

    def localize(self, images: torch.Tensor, labels: torch.Tensor) -> Localization:
        raise NotImplementedError


class PostHocCAM(Method):
    """A CAM computed from the shared stage-1 classifier; subclasses override `cams`."""

    needs = ("cam-classifier",)
    requires_grad = False  # gradient-based CAMs set this
    # On CUDA the frozen classifier's layers below its CAM layer run in bfloat16 (tensor cores;
    # the many forwards of Smooth-GradCAM++ and ScoreCAM dominate their cost); from the CAM
    # layer on, everything is float32 (`bench.cams.autocast_trunk`). None: float32 throughout.
    # CPU always runs float32, so CPU results do not depend on this.
    cuda_trunk_dtype: torch.dtype | None = torch.bfloat16

    stage1_checkpoint = "last"  # which stage-1 checkpoint it reads (a seeder: its method's)

    def fit(self, train, val, ctx) -> None:
        self.model = ctx.classifier(self.stage1_checkpoint)
        self.model.eval()
        if self.cuda_trunk_dtype is not None and next(self.model.parameters()).device.type == "cuda":
            # NHWC weights: the layout in which bfloat16 convolutions run on the tensor cores
            self.model.to(memory_format=torch.channels_last)

    def localize(self, images, labels):
        dtype = self.cuda_trunk_dtype if images.device.type == "cuda" else None
        with torch.set_grad_enabled(self.requires_grad), autocast_trunk(self.model, images.device.type, dtype):
            cams, logits = self.cams(self.model, images, labels)
        return Localization(cams.detach(), logits.detach())

    def cams(self, model, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (cams [B,h,w], logits [B,C]) for the ground-truth `labels`."""
        raise NotImplementedError
