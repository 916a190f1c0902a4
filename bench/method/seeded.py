"""The base of the methods that train a decoder on pseudo-labels from a frozen CAM classifier
(F-CAM, NEGEV; the video methods TCAM and CoLo-CAM build on it too).

Every training step, on the device:
1. the frozen stage-1 classifier gives CAM features and skip features; the seed CAM
   (`seed_cam`, a registered post-hoc CAM method read on the same stage-1 classifier: the
   authors' CAM, without ReLU, or LayerCAM) of each image's localization class
   (`dataset.localization_classes`) is min-max normalised at its own resolution, then resized
   to the input (bilinear), as the authors' extractors do;
2. `seed_maps` turns those maps into seed labels (`cfg.seed`, a `bench.ops.seed.SeedConfig`:
   ROI, foreground / background draws, dilation), redrawn every minibatch;
3. the decoder's 2-channel output is trained with the terms of `loss_terms`: partial
   cross-entropy on the seeds, the dense CRF loss, the log-barrier size constraint, plus
   whatever a subclass adds. A term whose weight is 0 is not computed (ablation switch).

Inference: the decoder's foreground probability at input resolution, and the frozen
classifier's logits. Subclasses override `cam_maps`, `seed_maps` or `loss_terms`; a method
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
from bench.config import ScheduleChanges
from bench.method.base import Localization, Method, PostHocCAM
from bench.models.decoder import EncoderTap, UNetDecoder
from bench.ops.seed import SeedConfig, make_seeds
from bench.method.training import train
from bench.registry import get_method

log = logging.getLogger(__name__)


def build_cam_seeder(name: str, owner: str, train_set, val, ctx, checkpoint: str = "last") -> PostHocCAM:
    """The post-hoc CAM method `name` fitted on the cell's stage-1 classifier (its `checkpoint`,
    its own copy): the CAM that feeds a method's seeds."""
    cls = get_method(name)
    if not issubclass(cls, PostHocCAM):
        raise ValueError(f"{owner}: seed CAM {name!r} is not a post-hoc CAM method of the stage-1 classifier "
                         f"(a PostHocCAM such as cam, gradcam or layercam)")
    seeder = cls()
    seeder.stage1_checkpoint = checkpoint
    seeder.fit(train_set, val, ctx)
    return seeder


def seed_cams(seeder: PostHocCAM, images, classes, size=None) -> torch.Tensor:
    """The seeder's CAMs [B,h,w] of `classes`, min-max normalised at the CAM's resolution, then
    bilinearly resized to `size` (the authors' order: normalise, then upsample)."""
    cams = minmax(seeder.localize(images, classes).cams.detach().float())
    if size is not None and tuple(cams.shape[-2:]) != tuple(size):
        cams = F.interpolate(cams[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return cams


@dataclass(frozen=True)
class SeededDecoderConfig:
    """Defaults: F-CAM's released configuration (fcam-wsol README command, CUB, ResNet50);
    docs/fidelity.md lists each choice with its reference."""

    decoder_widths: tuple[int, ...] = (256, 128, 64, 32, 16)
    # "concat": the smp U-Net of the authors' code (encoder outputs concatenated at the features'
    # resolution, nearest resizing, 3x3 head); "reduce": a cheaper 1x1 reduction instead
    decoder_skips: str = "concat"
    # the CAM of the seeds: a registered post-hoc CAM method on the stage-1 classifier
    seed_cam: str = "cam"
    # Otsu ROI eroded 11x11 once (restored if it erodes away), 1 uniform fg pixel in it, 1 uniform
    # bg pixel among exactly int(0.1 HW) lowest, both dilated 3x3 (fcam-wsol GetFastSeederSLFCAMS)
    seed: SeedConfig = SeedConfig(n_fg=1, n_bg=1, roi="otsu", fg_mode="uniform", erode_size=11,
                                  erode_revert=True, bg_fraction=0.1, dilate=True)
    seed_weight: float = 1.0  # partial cross-entropy
    crf_weight: float = 2e-9  # dense CRF (0 = off), the authors' value for a 224x224 grid
    # The CRF loss sums over pixel pairs (sigma_xy 100 spans a 224 image), so its size goes
    # with the square of the grid's pixel count: the weight is multiplied by
    # (side^2 / (h*w))^2 for the h x w grid the CRF runs on (after crf_scale). On 224x224
    # inputs at scale 1 that factor is 1 (the authors' weight as is); smaller images get a
    # term of the same relative size. None: the weight as given on every grid.
    crf_reference_side: int | None = 224
    crf_sigma_rgb: float = 15.0
    crf_sigma_xy: float = 100.0
    crf_scale: float = 1.0  # down-scaling of image and maps for the CRF (1 = full resolution)
    size_weight: float = 0.1  # log-barrier size constraint (0 = off)
    lr: float | None = None  # decoder learning rate (None: the budget's, `Budget.method_schedule`)
    schedule: ScheduleChanges = ScheduleChanges()  # the budget's schedule unless set (paper presets)

    def __post_init__(self):
        if not isinstance(self.seed, SeedConfig):
            raise ValueError(f"{type(self).__name__}: seed must be a SeedConfig, got {type(self.seed).__name__}")


class DecoderNet(nn.Module):
    """Frozen classifier + trainable decoder; `train()` never unfreezes the classifier's BN."""

    def __init__(self, classifier, decoder_widths, probe_size: int, feature_skips: str = "concat"):
        super().__init__()
        self.classifier = classifier.requires_grad_(False).eval()
        self.tap = EncoderTap(classifier, probe_size)
        scale = getattr(classifier.backbone, "decoder_width_scale", 1.0)
        widths = tuple(max(4, round(w * scale)) for w in decoder_widths)
        self.decoder = UNetDecoder(self.tap.feature_channels, self.tap.level_skip_channels, widths,
                                   feature_skip_channels=self.tap.feature_skip_channels, feature_skips=feature_skips)

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
    # {dataset name: {setting: value}}: the authors' released configuration of a (method,
    # dataset) where it differs from the config's defaults (which are the authors' own), applied
    # under the `paper` budget (`bench.config.paper_preset`) and recorded in the cell's config
    paper_presets: dict[str, dict[str, str]] = {}
    batch_keys: tuple[str, ...] = ()  # training-batch entries passed to cam_maps / loss_terms as keywords
    # Model selection (docs/protocol.md): the authors keep the decoder's epoch with the best
    # validation localization and draw the seeds (`seed_checkpoint`, as PixelCAM's) from the stage-1 classifier's best-localization
    # checkpoint. The frozen encoder under the decoder (and so the class scores) is read from
    # `encoder_checkpoint`: F-CAM's is best-localization too; NEGEV, TCAM and CoLo-CAM load
    # their best-classification checkpoint there.
    selection = "best-loc"
    seed_checkpoint = "best-loc"
    encoder_checkpoint = "best-loc"

    def train_loader(self, train_set, ctx):
        """The decoder's training batches (called once `self.net` is built); None: the budget's
        shuffled loader over `train_set`."""
        return None

    def cam_maps(self, net: DecoderNet, features, images, labels, **batch) -> torch.Tensor:
        """Normalised seed CAMs [B,H,W] at input resolution (`seed_cams` of `cfg.seed_cam`)."""
        return seed_cams(self.seeder, images, self.dataset.localization_classes(labels), images.shape[-2:])

    def seed_maps(self, cams: torch.Tensor, images, labels) -> torch.Tensor:
        """Seed labels [B,H,W] (1 fg, 0 bg, 255 ignore) from normalised CAMs."""
        return make_seeds(cams.clamp(0, 1), self.cfg.seed, self.generator)

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
        self.net = DecoderNet(ctx.classifier(self.encoder_checkpoint), self.cfg.decoder_widths, probe,
                              self.cfg.decoder_skips).to(ctx.device)
        self.seeder = build_cam_seeder(self.cfg.seed_cam, self.name, train_set, val, ctx, self.seed_checkpoint)

        def on_epoch_end(epoch, terms):
            log.info("%s epoch %d: %s (log-barrier t=%.3f)", self.name, epoch,
                     ", ".join(f"{k} {v:.4g}" for k, v in terms.items()), self.t)
            self.t = schedule.t_at(epoch + 1)

        train(self.net, self.net.decoder.parameters(), train_set, ctx.budget, ctx.device,
              self.cfg.schedule.apply(ctx.budget.method_schedule(lr=self.cfg.lr)), ctx.seed, loss_fn=self.training_loss,
              desc=f"{self.name} decoder", on_epoch_end=on_epoch_end, loader=self.train_loader(train_set, ctx),
              batch_keys=self.batch_keys, selector=ctx.selector(self))
        self.net.eval()

    def localize(self, images, labels):
        with torch.no_grad():
            logits, _, cls_logits = self.net(images)
        return Localization(logits.float().softmax(1)[:, 1], cls_logits.float())


@dataclass(frozen=True)
class VideoSeededConfig(SeededDecoderConfig):
    """What TCAM and CoLo-CAM share (the same authors' pipeline, tcam-wsol-video / colo-cam
    README commands): seeds `seed_weighted` (foreground among the top of the Otsu ROI, weighted
    by the CAM; background uniform among exactly int(0.1 HW) lowest, no erosion, 3x3 dilation),
    per-frame CRF 2e-9 at scale 1, size constraint 0.01."""

    seed: SeedConfig = SeedConfig(n_fg=1, n_bg=1, roi="otsu", fg_mode="top", top_fraction=0.6, erode_size=0,
                                  bg_fraction=0.1, dilate=True)
    size_weight: float = 0.01


class VideoSeededDecoder(SeededDecoder):
    """A seeded decoder trained on the frames of shots (`VideoFrames` train splits)."""

    tasks = ("video",)
    Config = VideoSeededConfig
    # the encoder from the stage-1 best-classification checkpoint, the seeder from the
    # best-localization one (`tcam_pretrained_cl_ch_pt` / `tcam_pretrained_seeder_ch_pt`;
    # CoLo-CAM's `colocam_pretrained_cl_ch_pt` likewise)
    encoder_checkpoint = "best-cls"

    def shot_frames(self, train_set):
        """The `VideoFrames` of a shot-wise train split (a `ShotFrames`), or a clear error."""
        frames = getattr(train_set, "frames", None)
        if frames is None or not hasattr(frames, "shot_frames"):
            raise TypeError(f"{self.name} trains on the frames of shots (bench.dataset.video.ShotFrames); got "
                            f"{type(train_set).__name__}")
        return frames
