from dataclasses import dataclass

from bench.models.pooling import LSEHead
from bench.method import PooledMapsCAM, register_method


@dataclass(frozen=True)
class LSEConfig:
    # sharpness of the pooling: the survey's released default (`lse_r` 10 in
    # jeromerony/survey_wsl_histology dlib/configure/config.py); r -> 0 is GAP, r -> inf is max
    r: float = 10.0

    def __post_init__(self):
        if self.r <= 0:
            raise ValueError(f"lse: r must be > 0, got {self.r}")


@register_method
class LSE(PooledMapsCAM):
    """Log-sum-exp pooling (Pinheiro & Collobert, CVPR 2015; Sun et al., CVPR 2016): class maps
    from a 1x1 conv, score (1/r) log mean exp(r s); the ground-truth class's map is the CAM."""

    name = "lse"
    Config = LSEConfig

    def make_head(self, in_channels, num_classes):
        return LSEHead(in_channels, num_classes, self.cfg.r)
