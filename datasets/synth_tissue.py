from bench.dataset import SynthTissueConfig
from bench.dataset import SyntheticDataset
from bench.dataset import register_dataset


@register_dataset
class SynthTissue(SyntheticDataset):
    """Embedded: histology-like crops; `normal` images are fully negative, `tumor` ones hold
    ROIs of subtly different texture (masks, PxAP).

    Knobs: `SynthTissueConfig` in bench/data/synthetic.py; `--set synth-tissue.KEY=VALUE`.
    """

    name = "synth-tissue"
    annotation = "mask"
    primary_metric = "PxAP"
    negative_class = 0
    Config = SynthTissueConfig
