from dataclasses import dataclass

from bench.models.pooling import MILHead
from bench.method import PooledMapsCAM, register_method


@dataclass(frozen=True)
class DeepMILConfig:
    # attention hidden width 128 and the plain (not gated) attention: Ilse et al.'s released
    # default (`--model attention`, L = 128 in AMLab-Amsterdam/AttentionDeepMIL) and the survey's
    # (`mil_mid_channels` 128, `mil_gated` False)
    hidden: int = 128
    gated: bool = False

    def __post_init__(self):
        if self.hidden < 1:
            raise ValueError(f"deepmil: hidden must be >= 1, got {self.hidden}")


@register_method
class DeepMIL(PooledMapsCAM):
    """Attention-based deep MIL (Ilse et al., ICML 2018): the feature-map positions are the
    instances of a bag; per class, a softmax attention over positions weights the features into
    a bag embedding scored by a linear layer. The ground-truth class's attention map is the CAM."""

    name = "deepmil"
    Config = DeepMILConfig

    def make_head(self, in_channels, num_classes):
        return MILHead(in_channels, num_classes, self.cfg.hidden, self.cfg.gated)
