from dataclasses import dataclass

from bench.dataset import IGNORE
from bench.losses.partial_ce import negative_evidence_loss
from bench.method import SeedConfig, SeededDecoder, SeededDecoderConfig, register_method


@dataclass(frozen=True)
class NEGEVConfig(SeededDecoderConfig):
    """Defaults: NEGEV's released GlaS configuration (sbelharbi/negev README command, as its code
    reads it): the probability seeder (`MBProbSeederSLNEGEV`) with its sizes from `sl_min` /
    `sl_max` / `sl_ksz` (code defaults 10 / 10 / 1: the README's `sl_ng_*` values are never read):
    10 foreground pixels drawn over the whole image with probability proportional to the CAM,
    10 background pixels over the whole image weighted by 1 - the normalised CAM, undilated;
    no CRF (`--crf_ng False`), no size term (`--max_sizepos_ng False`)."""

    seed: SeedConfig = SeedConfig(n_fg=10, n_bg=10, roi="none", fg_mode="proportional", erode_size=0,
                                  bg_fraction=1.0, bg_mode="complement", dilate=False)
    crf_weight: float = 0.0
    size_weight: float = 0.0
    negative_weight: float = 1.0  # full-image background loss on fully negative images (0 = off)


@register_method
class NEGEV(SeededDecoder):
    """NEGEV (Belharbi et al., MIDL 2022): F-CAM's decoder plus negative evidence: on fully negative
    images (the dataset's negative class) every pixel is trained as background; seeds and the
    size constraint skip those images. On a dataset without a negative class it is F-CAM's
    decoder on the probability seeder's seeds."""

    name = "negev"
    Config = NEGEVConfig
    # the encoder from the stage-1 best-classification checkpoint, the seeds' CAMs from the
    # best-localization one (negev `negev_ptretrained_cl_cp` / `negev_ptretrained_loc_cp`)
    encoder_checkpoint = "best-cls"

    def negative(self, labels):
        neg = self.dataset.negative_class
        return labels == neg if neg is not None else labels < 0  # all False

    def seed_maps(self, cams, images, labels):
        seeds = super().seed_maps(cams, images, labels)
        return seeds.masked_fill(self.negative(labels)[:, None, None], IGNORE)

    def size_mask(self, labels):
        return ~self.negative(labels)

    def loss_terms(self, logits, seeds, images, labels, **batch):
        terms = super().loss_terms(logits, seeds, images, labels, **batch)
        if self.cfg.negative_weight:
            terms["negative"] = self.cfg.negative_weight * negative_evidence_loss(logits.float(), self.negative(labels))
        return terms
