from dataclasses import dataclass

from bench.models.wildcat import ClassMapHead
from bench.method import PooledMapsCAM, register_method


@dataclass(frozen=True)
class WildcatConfig:
    # The survey's released defaults (jeromerony/survey_wsl_histology dlib/configure/config.py):
    # 5 maps per class, the top 50% and bottom 10% of positions, low term weight 0.6.
    # Durand et al.'s VOC command uses 8 maps, k 0.2 (both ends), alpha 0.7.
    modalities: int = 5
    kmax: float = 0.5
    kmin: float = 0.1
    alpha: float = 0.6

    def __post_init__(self):
        if self.modalities < 1:
            raise ValueError(f"wildcat: modalities must be >= 1, got {self.modalities}")
        if not 0.0 < self.kmax <= 1.0 or not 0.0 <= self.kmin <= 1.0:
            raise ValueError(f"wildcat: need 0 < kmax <= 1 and 0 <= kmin <= 1, got {self.kmax}, {self.kmin}")


@register_method
class Wildcat(PooledMapsCAM):
    """WILDCAT (Durand et al., CVPR 2017): M maps per class from a 1x1 conv, averaged per class
    (class-wise pooling), then k-max + alpha k-min spatial pooling; the ground-truth class's map
    is the CAM. The head is `ClassMapHead`, the one Max-Min and Min-Max entropy localize with."""

    name = "wildcat"
    Config = WildcatConfig

    def make_head(self, in_channels, num_classes):
        c = self.cfg
        return ClassMapHead(in_channels, num_classes, c.modalities, c.kmax, c.kmin, c.alpha)
