"""The base of the methods that train a decoder on pseudo-labels from a frozen CAM classifier
(F-CAM, NEGEV; the video methods TCAM and CoLo-CAM build on it too).

Every training step, on the device:
1. the frozen stage-1 classifier gives CAM features, skip features and the CAM of each image's
   localization class (`dataset.localization_classes`), min-max normalised and resized to the
   input;
2. `seed_maps` turns those maps into seed labels (Otsu ROI, foreground / background draws,
   3x3 dilation; `bench.ops.seed`), redrawn every minibatch;
3. the decoder's 2-channel output is trained with the terms of `loss_terms`: partial
   cross-entropy on the seeds, the dense CRF loss, the log-barrier size constraint, plus
   whatever a subclass adds. A term whose weight is 0 is not computed (ablation switch).

Inference: the decoder's foreground probability at input resolution, and the frozen
classifier's logits. Subclasses override `seed_maps`, `loss_terms` or `seed_config`; a method
whose hooks need more of a training batch than its images and labels (video: the frame index,
the shot id) names those entries in `batch_keys` (they reach `cam_maps` and `loss_terms` as
keywords), and `train_loader` can replace the shuffled loader (video: batches of clips)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.cams.normalize import minmax
from bench.losses.crf import crf_loss
from bench.losses.log_barrier import LogBarrierSchedule, size_constraint
from bench.losses.partial_ce import partial_cross_entropy
from bench.method.base import Localization, Method
from bench.models.decoder import EncoderTap, UNetDecoder
from bench.ops.seed import SeedConfig, make_seeds
from bench.method.training import train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeededDecoderConfig:
    """Defaults: F-CAM (Belharbi et al., WACV 2022) as summarised in docs/protocol.md ("Seeds")."""

    decoder_widths: tuple[int, ...] = (256, 128, 64, 32, 16)
    n_fg: int = 1  # foreground seeds per image (before 3x3 dilation)
    n_bg: int = 1
    fg_mode: str = "uniform"  # uniform | top | proportional (bench.ops.seed)
    erode_size: int = 3  # erosion of the Otsu ROI before foreground draws (0 = none)
    bg_fraction: float = 0.2  # background seeds among the lowest 20% CAM values (the papers' 10-20%)
    seed_weight: float = 1.0  # partial cross-entropy
    crf_weight: float = 2e-9  # dense CRF (0 = off), the papers' value for a 224x224 grid
    # The CRF loss sums over pixel pairs, so its size goes with the square of the grid's pixel
    # count: the weight is multiplied by (side^2 / (h*w))^2 for the h x w grid the CRF runs on
    # (after crf_scale), which keeps the papers' weight on their 224x224 images and gives the
    # term the same size on smaller ones (at 2e-9 it was ~1e-3 of the seed loss on 96-px images).
    # None: the weight as given.
    crf_reference_side: int | None = 224
    crf_sigma_rgb: float = 15.0
    crf_sigma_xy: float = 100.0
    crf_scale: float = 0.5  # down-scaling of image and maps for the CRF (1 = full resolution)
    size_weight: float = 1.0  # log-barrier size constraint (0 = off)
    lr: float | None = None  # decoder learning rate (None: the budget's, `Budget.method_schedule`)


class DecoderNet(nn.Module):
    """Frozen classifier + trainable decoder; `train()` never unfreezes the classifier's BN."""

    def __init__(self, classifier, decoder_widths, probe_size: int):
        super().__init__()
        self.classifier = classifier.requires_grad_(False).eval()
        self.tap = EncoderTap(classifier, probe_size)
        scale = getattr(classifier.backbone, "decoder_width_scale", 1.0)
        widths = tuple(max(4, round(w * scale)) for w in decoder_widths)
        self.decoder = UNetDecoder(self.tap.feature_channels, self.tap.level_skip_channels, widths)

    def train(self, mode: bool = True):
        super().train(mode)
        self.classifier.eval()
        return self

    def encode(self, images):
        with torch.no_grad():
            features, skips = self.tap(self.classifier, images)
            logits = self.classifier.head(features)
        return features, skips, logits

    def forward(self, images):
        features, skips, logits = self.encode(images)
        return self.decoder(features, skips, images.shape[-2:]), features, logits


class SeededDecoder(Method):
    needs = ("cam-classifier",)
    Config = SeededDecoderConfig
    batch_keys: tuple[str, ...] = ()  # training-batch entries passed to cam_maps / loss_terms as keywords
    # Model selection (docs/protocol.md): the authors keep the decoder's epoch with the best
    # validation localization, and read the stage-1 classifier's best-localization checkpoint
    # (F-CAM's `cp_best`; NEGEV, TCAM, CoLo-CAM take their seeds from it too)
    selection = "best-loc"
    stage1_checkpoint = "best-loc"

    def train_loader(self, train_set, ctx):
        """The decoder's training batches (called once `self.net` is built); None: the budget's
        shuffled loader over `train_set`."""
        return None

    def seed_config(self) -> SeedConfig:
        c = self.cfg
        return SeedConfig(n_fg=c.n_fg, n_bg=c.n_bg, fg_mode=c.fg_mode, erode_size=c.erode_size,
                          bg_fraction=c.bg_fraction)

    def cam_maps(self, net: DecoderNet, features, images, labels, **batch) -> torch.Tensor:
        """Normalised CAMs [B,H,W] at input resolution of the frozen classifier."""
        classes = self.dataset.localization_classes(labels)
        cams = torch.relu(net.classifier.cam(features.float(), classes))
        cams = F.interpolate(cams[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return minmax(cams)

    def seed_maps(self, cams: torch.Tensor, images, labels) -> torch.Tensor:
        """Seed labels [B,H,W] (1 fg, 0 bg, 255 ignore) from normalised CAMs."""
        return make_seeds(cams.clamp(0, 1), self.seed_config(), self.generator)

    def loss_terms(self, logits: torch.Tensor, seeds, images, labels, **batch) -> dict[str, torch.Tensor]:
        c = self.cfg
        probs = logits.float().softmax(1)
        terms = {}
        if c.seed_weight:
            terms["seeds"] = c.seed_weight * partial_cross_entropy(logits.float(), seeds)
        if c.crf_weight:
            terms["crf"] = crf_loss(images.float() * 255, probs, c.crf_sigma_rgb, c.crf_sigma_xy,
                                    scale_factor=None if c.crf_scale == 1 else c.crf_scale,
                                    weight=self.crf_grid_weight(images.shape[-2:]))
        if c.size_weight:
            terms["size"] = c.size_weight * size_constraint(probs, self.t, self.size_mask(labels))
        return terms

    def crf_grid_weight(self, size) -> float:
        """The CRF weight for inputs of `size` (see `crf_reference_side`)."""
        c = self.cfg
        if c.crf_reference_side is None:
            return c.crf_weight
        h, w = (max(1, int(s * c.crf_scale)) for s in size)
        return c.crf_weight * (c.crf_reference_side ** 2 / (h * w)) ** 2

    def size_mask(self, labels):
        """Images the size constraint applies to (all by default)."""
        return None

    def training_loss(self, net, images, labels, **batch):
        logits, features, _ = net(images)
        with torch.no_grad():
            seeds = self.seed_maps(self.cam_maps(net, features, images, labels, **batch), images, labels)
        return self.loss_terms(logits, seeds, images, labels, **batch)

    def fit(self, train_set, val, ctx) -> None:
        self.dataset = ctx.dataset
        self.generator = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
        schedule = LogBarrierSchedule()
        self.t = schedule.t_at(0)
        probe = train_set[0]["image"].shape[-1]
        self.net = DecoderNet(ctx.classifier(self.stage1_checkpoint), self.cfg.decoder_widths, probe).to(ctx.device)

        def on_epoch_end(epoch, terms):
            log.info("%s epoch %d: %s (log-barrier t=%.3f)", self.name, epoch,
                     ", ".join(f"{k} {v:.4g}" for k, v in terms.items()), self.t)
            self.t = schedule.t_at(epoch + 1)

        train(self.net, self.net.decoder.parameters(), train_set, ctx.budget, ctx.device,
              ctx.budget.method_schedule(lr=self.cfg.lr), ctx.seed, loss_fn=self.training_loss,
              desc=f"{self.name} decoder", on_epoch_end=on_epoch_end, loader=self.train_loader(train_set, ctx),
              batch_keys=self.batch_keys, selector=ctx.selector(self))
        self.net.eval()

    def localize(self, images, labels):
        with torch.no_grad():
            logits, _, cls_logits = self.net(images)
        return Localization(logits.float().softmax(1)[:, 1], cls_logits.float())
