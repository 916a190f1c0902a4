from dataclasses import dataclass, replace

import torch.nn.functional as F

from bench.method import TrainedCAM, register_method, train
from bench.models import BACKBONES, load_backbone_weights
from bench.models.vit import TSCAMNet, VisionTransformer, is_vit


@dataclass(frozen=True)
class TSCAMConfig:
    # "auto": the run's backbone when it is a vision transformer, else `small-vit` for the CPU
    # budgets' small-cnn and DeiT-S (the paper's main backbone) for the full-size CNNs
    backbone: str = "auto"
    # TS-CAM's released DeiT-S configurations train with SGD at 0.001 (configs/CUB/
    # deit_tscam_small_patch16_224.yaml), a tenth of the WSOL protocol's classifier rate
    lr_factor: float = 0.1

    def __post_init__(self):
        if self.lr_factor <= 0:
            raise ValueError(f"tscam: lr_factor must be > 0, got {self.lr_factor}")


@register_method
class TSCAM(TrainedCAM):
    """TS-CAM (Gao et al., ICCV 2021): a vision transformer; its patch tokens go through a 3x3
    conv to semantic maps (one per class) whose global average is the class score. Map: the
    class token's attention to the patches (head-averaged, summed over layers) times the
    ground-truth class's semantic map."""

    name = "tscam"
    Config = TSCAMConfig

    def vit_name(self, ctx) -> str:
        if self.cfg.backbone != "auto":
            return self.cfg.backbone
        if is_vit(ctx.backbone):
            return ctx.backbone
        return "small-vit" if ctx.backbone == "small-cnn" else "deit-small"

    def build_model(self, ctx):
        name = self.vit_name(ctx)
        if name not in BACKBONES:
            raise ValueError(f"tscam: unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}")
        vit = BACKBONES[name]()
        if not isinstance(vit, VisionTransformer):
            raise ValueError(f"tscam: backbone {name!r} is not a vision transformer")
        if name == ctx.backbone and ctx.weights is not None:  # the weights file is the run backbone's
            load_backbone_weights(vit, ctx.weights)
        ctx.log.info("tscam: backbone %s", name)
        return TSCAMNet(vit, ctx.num_classes)

    def fit(self, train_set, val, ctx) -> None:
        self.model = self.build_model(ctx).to(ctx.device)
        schedule = ctx.budget.stage1_schedule()
        schedule = replace(schedule, lr=schedule.lr * self.cfg.lr_factor)
        train(self.model, self.model.parameters(), train_set, ctx.budget, ctx.device, schedule, ctx.seed,
              loss_fn=lambda m, x, y: F.cross_entropy(m(x).logits, y), desc="tscam classifier")
        self.model.eval()

    def cams(self, model, images, labels):
        return model.cam(images, labels)
