from bench.dataset import SynthTissueConfig, SyntheticDataset, register_dataset


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
