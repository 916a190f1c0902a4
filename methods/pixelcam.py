import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.dataset import IGNORE
from bench.losses.partial_ce import partial_cross_entropy
from bench.method import (FineTuneConfig, Localization, Method, ScheduleChanges, build_cam_seeder, register_method,
                          seed_cams, train)
from bench.ops.pixel_classifier import pixel_classifier_probs, pixel_seed_ce
from bench.ops.seed import SeedConfig, make_seeds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PixelCAMConfig(FineTuneConfig):
    """Defaults: PixelCAM's released GlaS configuration (AlexisGuichemerreCode/PixelCAM README
    command, run as `--method EnergyCAM --pixel_wise_classification True`)."""

    # The CAM of the seeds: a registered post-hoc method read on the frozen shared stage-1
    # classifier; the authors store their stage-1 LayerCAMs.
    seed_cam: str = "layercam"
    pixel_weight: float = 1.0  # lambda of the seeds' partial cross-entropy (`ece_lambda` 1)
    # `MBProbNegAreaSeederSLPCAM`: 5 fg drawn over the whole image proportional to the CAM,
    # 5 bg among exactly int(0.2 HW) lowest weighted by 1 - the normalised CAM (the pool size
    # is read from `sl_ng_min_p`, 0.2), undilated (`sl_ksz` 1)
    seed: SeedConfig = SeedConfig(n_fg=5, n_bg=5, roi="none", fg_mode="proportional", erode_size=0,
                                  bg_fraction=0.2, bg_mode="complement", dilate=False)
    # seeds drawn at the input's resolution and the pixel logits bilinearly upsampled to it
    # (`low_res False`); False: seeds on the feature grid (the CAM resized to it)
    full_resolution_seeds: bool = True
    spatial_dropout: float = 0.1  # Dropout2d on the features before the image head only (0 = off)
    # Images of the dataset's fully negative class (if any) get no seeds: their CAM's Otsu
    # ROI would mark normal tissue as foreground.
    seeds_on_negative_images: bool = False
    schedule: ScheduleChanges = ScheduleChanges()  # the budget's schedule unless set (paper presets)

    def __post_init__(self):
        super().__post_init__()
        if self.pixel_weight < 0:
            raise ValueError(f"PixelCAMConfig: pixel_weight must be >= 0, got {self.pixel_weight}")
        if not 0.0 <= self.spatial_dropout < 1.0:
            raise ValueError(f"PixelCAMConfig: spatial_dropout must be in [0, 1), got {self.spatial_dropout}")
        if not isinstance(self.seed, SeedConfig):
            raise ValueError(f"PixelCAMConfig: seed must be a SeedConfig, got {type(self.seed).__name__}")


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

    Loss: cross-entropy of the image label (on spatially dropped-out features) + `pixel_weight`
    x partial cross-entropy of the pixel classifier at seed pixels only, its logits bilinearly
    upsampled to the input where the seeds are drawn (or, `full_resolution_seeds=False`, on the
    feature grid: the fused `pixel_seed_ce` op), the seeds drawn every minibatch from the CAMs
    of a frozen pretrained WSOL model (`seed_cam` on the stage-1 classifier). Output: the pixel
    classifier's foreground probability on the feature grid (fused op) + image logits."""

    name = "pixelcam"
    needs = ("cam-classifier",)
    Config = PixelCAMConfig
    # the authors' README command under the `paper` budget (bench.config.paper_preset): GlaS
    # fold 0 at lr 0.001 (lr_factor 0.1 of the budget's 0.01), x0.1 every 5 epochs, 1000 epochs
    paper_presets = {"glas": {"schedule.step_every": "5", "schedule.gamma": "0.1"}}
    # The README's command: the epoch with the best validation localization is kept
    # (`--eval_checkpoint_type best_localization`), the model starts from the stage-1
    # best-classification checkpoint (`--path_pre_trained_model_cl ...cp_best_classification`)
    # and the seeds come from the best-localization one's stored CAMs (`--path_cam ...-bloc-`)
    selection = "best-loc"
    init_checkpoint = "best-cls"
    seed_checkpoint = "best-loc"

    def seeds(self, images: torch.Tensor, labels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Seed labels [B,h,w] (1 fg, 0 bg, 255 ignore) on `grid` from the seed CAMs."""
        cams = seed_cams(self.seeder, images, self.dataset.localization_classes(labels), grid)
        seeds = make_seeds(cams, self.cfg.seed, self.generator)
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
        features = out.features.float()  # the ops take float32/64 (autocast may give bf16)
        c, head = self.cfg, model.pixel_head
        logits = out.logits
        if c.spatial_dropout:  # the image head sees dropped-out features, the pixel head does not
            logits = model.head(F.dropout2d(out.features, c.spatial_dropout, training=True))
        if c.full_resolution_seeds:
            seeds = self.seeds(images, labels, tuple(images.shape[-2:]))
            pixel_logits = torch.einsum("kc,bchw->bkhw", head.weight, features) + head.bias.view(1, -1, 1, 1)
            pixel_logits = F.interpolate(pixel_logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
            pixel = partial_cross_entropy(pixel_logits, seeds)
        else:
            pixel = pixel_seed_ce(features, head.weight, head.bias, self.seeds(images, labels, tuple(features.shape[-2:])))
        return {"cls_ce": F.cross_entropy(logits, labels), "pixel_ce": c.pixel_weight * pixel}

    def fit(self, train_set, val, ctx) -> None:
        self.dataset = ctx.dataset
        self.seeder = build_cam_seeder(self.cfg.seed_cam, self.name, train_set, val, ctx, self.seed_checkpoint)
        self.generator = torch.Generator(ctx.device).manual_seed(ctx.seed)
        # ctx.classifier() returns a fresh copy of the cached stage-1 weights: the seeder keeps its own
        model = ctx.classifier(self.init_checkpoint) if self.cfg.init_from_stage1 else ctx.new_classifier()
        self.model = model = self.attach_head(model).to(ctx.device)

        def on_epoch_end(epoch, terms):
            log.info("pixelcam epoch %d: %s", epoch, ", ".join(f"{k}={v:.4f}" for k, v in terms.items()))

        schedule = self.cfg.schedule.apply(ctx.budget.method_schedule(lr=ctx.budget.lr * self.cfg.lr_factor))
        train(model, model.parameters(), train_set, ctx.budget, ctx.device, schedule, ctx.seed,
              loss_fn=self.training_loss, desc="pixelcam", on_epoch_end=on_epoch_end, selector=ctx.selector(self))
        model.eval()

    def localize(self, images, labels):
        self.model.eval()
        with torch.no_grad():
            out = self.model(images)
            head = self.model.pixel_head
            fg = pixel_classifier_probs(out.features.float(), head.weight, head.bias, fg_class=1)
        return Localization(fg, out.logits)
