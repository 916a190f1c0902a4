import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.cams import minmax
from bench.dataset import IGNORE
from bench.method import Localization, Method, PostHocCAM, get_method, register_method, train
from bench.ops.pixel_classifier import pixel_classifier_probs, pixel_seed_ce
from bench.ops.seed import SeedConfig, make_seeds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PixelCAMConfig:
    # Which pretrained WSOL model makes the seeds: a registered post-hoc method read on the
    # frozen shared stage-1 classifier (the paper pairs PixelCAM with several, e.g. LayerCAM).
    seeder: str = "cam"
    pixel_weight: float = 1.0  # lambda of the seeds' partial cross-entropy (the released script: 1)
    # Seeds (docs/protocol.md, "Seeds"): Otsu ROI of the seeder's CAM, n_fg uniform foreground
    # pixels from it, n_bg uniform background pixels among the lowest bg_fraction of the CAM,
    # each dilated 3x3 on the feature grid, redrawn every minibatch. 5 + 5: the released script.
    n_fg: int = 5
    n_bg: int = 5
    fg_mode: str = "uniform"
    bg_fraction: float = 0.2
    erode_size: int = 0
    # Images of the dataset's fully negative class (if any) get no seeds: their CAM's Otsu
    # ROI would mark normal tissue as foreground.
    seeds_on_negative_images: bool = False
    init_from_stage1: bool = True  # start the jointly trained network from the stage-1 classifier
    # learning rate = budget.lr * lr_factor. The released script fine-tunes at 0.001, a tenth of
    # the classifier learning rate of the papers' WSOL protocol (the `paper` budget's 0.01).
    lr_factor: float = 0.1

    def __post_init__(self):
        if self.pixel_weight < 0:
            raise ValueError(f"PixelCAMConfig: pixel_weight must be >= 0, got {self.pixel_weight}")
        if self.lr_factor <= 0:
            raise ValueError(f"PixelCAMConfig: lr_factor must be > 0, got {self.lr_factor}")
        self.seed_config()  # validates the seeding fields

    def seed_config(self) -> SeedConfig:
        return SeedConfig(n_fg=self.n_fg, n_bg=self.n_bg, fg_mode=self.fg_mode, bg_fraction=self.bg_fraction,
                          erode_size=self.erode_size, dilate=True)


class PixelHead(nn.Module):
    """The foreground/background linear classifier of one pixel's feature vector."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2, in_channels))
        self.bias = nn.Parameter(torch.zeros(2))
        nn.init.normal_(self.weight, std=0.01)


@register_method
class PixelCAM(Method):
    """PixelCAM (Guichemerre et al., MIDL 2025): a foreground/background pixel classifier in the
    encoder's pixel-feature space (the CAM features), trained jointly with the image classifier.

    Loss: cross-entropy of the image label + `pixel_weight` x partial cross-entropy of the pixel
    classifier at seed pixels only (the `pixel_seed_ce` op), the seeds drawn every minibatch from
    the CAMs of a frozen pretrained WSOL model (`seeder` on the stage-1 classifier). Output: the
    pixel classifier's foreground probability on the feature grid (fused op) + image logits."""

    name = "pixelcam"
    needs = ("cam-classifier",)
    Config = PixelCAMConfig

    def build_seeder(self, train_set, val, ctx) -> PostHocCAM:
        seeder_cls = get_method(self.cfg.seeder)
        if not issubclass(seeder_cls, PostHocCAM):
            raise ValueError(f"pixelcam: seeder {self.cfg.seeder!r} is not a post-hoc CAM method of the stage-1 "
                             f"classifier (a PostHocCAM subclass such as cam, gradcam or layercam)")
        seeder = seeder_cls()
        seeder.fit(train_set, val, ctx)
        return seeder

    def seeds(self, images: torch.Tensor, labels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Seed labels [B,h,w] (1 fg, 0 bg, 255 ignore) on the feature grid."""
        cams = self.seeder.localize(images, self.dataset.localization_classes(labels)).cams.detach().float()
        if tuple(cams.shape[-2:]) != grid:
            cams = F.interpolate(cams[:, None], size=grid, mode="bilinear", align_corners=False)[:, 0]
        seeds = make_seeds(minmax(cams), self.cfg.seed_config(), self.generator)
        negative = getattr(self.dataset, "negative_class", None)
        if negative is not None and not self.cfg.seeds_on_negative_images:
            seeds[labels == negative] = IGNORE
        return seeds

    @staticmethod
    def attach_head(model):
        """Add the pixel classifier (`model.pixel_head`) on the model's CAM features."""
        model.pixel_head = PixelHead(model.backbone.out_channels).to(next(model.parameters()).device)
        return model

    def training_loss(self, model, images, labels):
        out = model(images)
        features = out.features.float()  # the op takes float32/64 (autocast may give bf16)
        seeds = self.seeds(images, labels, tuple(features.shape[-2:]))
        head = model.pixel_head
        return {"cls_ce": F.cross_entropy(out.logits, labels),
                "pixel_ce": self.cfg.pixel_weight * pixel_seed_ce(features, head.weight, head.bias, seeds)}

    def fit(self, train_set, val, ctx) -> None:
        self.dataset = ctx.dataset
        self.seeder = self.build_seeder(train_set, val, ctx)
        self.generator = torch.Generator(ctx.device).manual_seed(ctx.seed)
        # ctx.classifier() returns a fresh copy of the cached stage-1 weights: the seeder keeps its own
        model = ctx.classifier() if self.cfg.init_from_stage1 else ctx.new_classifier()
        self.model = model = self.attach_head(model).to(ctx.device)

        def on_epoch_end(epoch, terms):
            log.info("pixelcam epoch %d: %s", epoch, ", ".join(f"{k}={v:.4f}" for k, v in terms.items()))

        schedule = ctx.budget.method_schedule(lr=ctx.budget.lr * self.cfg.lr_factor)
        train(model, model.parameters(), train_set, ctx.budget, ctx.device, schedule, ctx.seed,
              loss_fn=self.training_loss, desc="pixelcam", on_epoch_end=on_epoch_end)
        model.eval()

    def localize(self, images, labels):
        self.model.eval()
        with torch.no_grad():
            out = self.model(images)
            head = self.model.pixel_head
            fg = pixel_classifier_probs(out.features.float(), head.weight, head.bias, fg_class=1)
        return Localization(fg, out.logits)
