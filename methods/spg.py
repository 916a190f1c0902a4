from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.cams import minmax
from bench.method import TrainedCAM, register_method
from bench.method.trained import backbone_layers, layer_outputs, width_for

# Where the side branches B1 / B2 read, per backbone (after wsolevaluation's wsol/vgg.py,
# wsol/resnet.py, wsol/inception.py SPG models): VGG16 conv4_3 / conv5_3 (SPG_A_1 / SPG_A_2
# outputs); ResNet50 layer3 block 0 / the whole layer3; InceptionV3 Mixed_5d / Mixed_6d.
# small-cnn (not a reference backbone): its second (downsampling) conv / its third conv. Branch C reads the
# CAM features (the reference's SPG_A_3 output).
SPG_TAPS = {
    "VGG16WSOL": ("features.22", "features.29"),
    "ResNet50WSOL": ("layer3.0", "layer3"),
    "InceptionV3WSOL": ("Mixed_5d", "Mixed_6d"),
    "SmallCNN": ("body.1", "body.2"),
}


@dataclass(frozen=True)
class SPGConfig:
    # (high, low) seed thresholds of the three guidance losses, wsolevaluation's config.py
    # spg_threshold_{1,2,3}{h,l}: B2 <- attention (0.7, 0.01), B1 <- sigmoid(B2) (0.5, 0.05),
    # C <- fused B1/B2 (0.7, 0.1)
    thresholds: tuple[tuple[float, float], ...] = ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1))
    min_fg_pixels: int = 30  # fewer foreground seeds: use > 0.7 x the map's max instead (wsol/method/spg.py)
    fallback_ratio: float = 0.7
    # channels of the branches' 3x3 convs: wsolevaluation's 512 (1024 for ResNet50's B branches);
    # None: that width scaled by the backbone's decoder_width_scale
    width: int | None = None

    def __post_init__(self):
        if len(self.thresholds) != 3 or any(len(t) != 2 for t in self.thresholds):
            raise ValueError(f"SPGConfig: thresholds must be three (high, low) pairs, got {self.thresholds}")


def conv_relu(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


@register_method
class SPG(TrainedCAM):
    """SPG (Zhang et al., ECCV 2018): self-produced guidance, as in wsolevaluation's re-implementation.

    Side branches B1 and B2 on two intermediate layers (`SPG_TAPS`; each a 3x3 conv + ReLU, then
    a shared 3x3 conv + ReLU and a 1x1 conv to one logit map) and a branch C on the CAM features
    (3x3 conv + ReLU, 1x1 conv). At the input resolution (bilinear upsampling) three guidance
    losses, masked BCE on the seeds of a detached map: B2 <- the classifier's min-max normalised
    class map of the ground-truth class; B1 <- sigmoid(B2); C <- (sigmoid(B1) + sigmoid(B2)) / 2.
    Seeds: foreground above the high threshold (fewer than min_fg_pixels: above
    fallback_ratio x the map's max), then background below the low one, the rest ignored.
    Loss CE + the three guidance terms (weights 1); the CAM is the classifier's fc-CAM (its
    GAP + linear head equals the reference's 1x1 class-map conv + GAP)."""

    name = "spg"
    Config = SPGConfig

    def build_model(self, ctx):
        model = ctx.new_classifier()
        head = model.classifier
        taps = backbone_layers(model, SPG_TAPS, self.name)
        with torch.no_grad(), layer_outputs(taps) as out:
            model.eval()(torch.zeros(1, 3, 64, 64))
        c1, c2 = (o.shape[1] for o in out)
        ref_b = 1024 if type(model.backbone).__name__ == "ResNet50WSOL" else 512
        wb, wc = width_for(model, self.cfg.width, ref_b), width_for(model, self.cfg.width, 512)
        model.spg_b1, model.spg_b2 = conv_relu(c1, wb), conv_relu(c2, wb)
        model.spg_b_shared = nn.Sequential(conv_relu(wb, wb), nn.Conv2d(wb, 1, 1))
        model.spg_c = nn.Sequential(conv_relu(head.in_features, wc), nn.Conv2d(wc, 1, 1))
        model.train()
        return model.to(head.weight.device, head.weight.dtype)

    def seeds(self, att: torch.Tensor, high: float, low: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(target [B,H,W] with 1 on foreground seeds, valid [B,H,W] bool) of a map in [0, 1]."""
        fg = att > high
        few = fg.flatten(1).sum(1) < self.cfg.min_fg_pixels
        peak = att.flatten(1).amax(1).view(-1, 1, 1)
        fg = torch.where(few.view(-1, 1, 1), att > self.cfg.fallback_ratio * peak, fg)
        bg = att < low
        fg = fg & ~bg  # background is written last in the reference: it wins on overlap
        return fg.to(att.dtype), fg | bg

    def guidance_loss(self, logits, att, high, low):
        target, valid = self.seeds(att.detach(), high, low)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (loss * valid.to(loss.dtype)).sum() / valid.sum().clamp_min(1)

    def training_loss(self, model, images, labels):
        size = images.shape[-2:]

        def up(x):
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)[:, 0]

        with layer_outputs(backbone_layers(model, SPG_TAPS, self.name)) as taps:
            out = model(images)
        b1 = up(model.spg_b_shared(model.spg_b1(taps[0])))
        b2 = up(model.spg_b_shared(model.spg_b2(taps[1])))
        c = up(model.spg_c(out.features))
        attention = minmax(up(model.cam(out.features, labels)[:, None]))
        fused = (torch.sigmoid(b1) + torch.sigmoid(b2)) / 2
        (h1, l1), (h2, l2), (h3, l3) = self.cfg.thresholds
        return {"ce": F.cross_entropy(out.logits, labels),
                "b2_attention": self.guidance_loss(b2, attention, h1, l1),
                "b1_b2": self.guidance_loss(b1, torch.sigmoid(b2), h2, l2),
                "c_fused": self.guidance_loss(c, fused, h3, l3)}
