from dataclasses import dataclass

from bench.method import SeededDecoder, SeededDecoderConfig, register_method
from bench.losses.partial_ce import negative_evidence_loss
from bench.dataset import IGNORE


@dataclass(frozen=True)
class NEGEVConfig(SeededDecoderConfig):
    fg_mode: str = "proportional"  # NEGEV draws foreground seeds with probability proportional to the CAM
    erode_size: int = 0
    negative_weight: float = 1.0  # full-image background loss on fully negative images (0 = off)


@register_method
class NEGEV(SeededDecoder):
    """NEGEV (Belharbi et al., MIDL 2022): F-CAM's decoder plus negative evidence: on fully negative
    images (the dataset's negative class) every pixel is trained as background; seeds and the
    size constraint skip those images. On a dataset without a negative class it is F-CAM with
    CAM-proportional seeds."""

    name = "negev"
    Config = NEGEVConfig

    def negative(self, labels):
        neg = self.dataset.negative_class
        return labels == neg if neg is not None else labels < 0  # all False

    def seed_maps(self, cams, images, labels):
        seeds = super().seed_maps(cams, images, labels)
        return seeds.masked_fill(self.negative(labels)[:, None, None], IGNORE)

    def size_mask(self, labels):
        return ~self.negative(labels)

    def loss_terms(self, logits, seeds, images, labels):
        terms = super().loss_terms(logits, seeds, images, labels)
        if self.cfg.negative_weight:
            terms["negative"] = self.cfg.negative_weight * negative_evidence_loss(logits.float(), self.negative(labels))
        return terms
