"""WSOL baselines whose class scores come from a spatial pooling head over class maps (the
survey's bottom-up family: max, log-sum-exp, WILDCAT, deep MIL, PRM): `PooledMapsCAM`, trained
like the other WSOL baselines (`TrainedCAM`); the ground-truth class's map is the localization."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.method.trained import TrainedCAM


class PooledMapsCAM(TrainedCAM):
    """Backbone + a pooling head (`make_head`) trained by cross-entropy on the pooled scores."""

    def make_head(self, in_channels: int, num_classes: int) -> nn.Module:
        """A module mapping features [B,D,h,w] to (scores [B,C], maps [B,C,h,w])."""
        raise NotImplementedError

    def build_model(self, ctx):
        model = ctx.new_classifier()
        model.pool_head = self.make_head(model.backbone.out_channels, ctx.num_classes).to(ctx.device)
        return model

    def training_loss(self, model, images, labels):
        scores, _ = model.pool_head(model.features(images))
        return F.cross_entropy(scores, labels)

    def cams(self, model, images, labels):
        scores, maps = model.pool_head(model.features(images))
        return maps[torch.arange(len(labels), device=maps.device), labels], scores
