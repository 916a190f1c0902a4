from bench.models.pooling import MaxPoolHead
from bench.method import PooledMapsCAM, register_method


@register_method
class MaxPool(PooledMapsCAM):
    """Global max pooling (Oquab et al., CVPR 2015; the survey's Max-Pooling): class maps from a
    1x1 conv, the class score is the map's maximum; the ground-truth class's map is the CAM."""

    name = "maxpool"

    def make_head(self, in_channels, num_classes):
        return MaxPoolHead(in_channels, num_classes)
