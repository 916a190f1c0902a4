from bench.dataset import SynthObjectsConfig, SyntheticDataset, register_dataset


@register_dataset
class SynthObjects(SyntheticDataset):
    """Embedded: objects told apart by one small part, pasted on photo clutter (boxes + masks).

    Knobs: `SynthObjectsConfig` in bench/data/synthetic.py (classes, counts per split, image
    size, clutter, body/part sizes); change one with `--set synth-objects.KEY=VALUE`.
    """

    name = "synth-objects"
    annotation = "box"
    primary_metric = "MaxBoxAccV2"
    extra_mask_file = "localization_masks.txt"  # adds PxAP
    Config = SynthObjectsConfig
