from bench.dataset import SynthTissueShiftedConfig, SyntheticDataset, register_dataset


@register_dataset
class SynthTissueShifted(SyntheticDataset):
    """Embedded: `synth-tissue` under a domain shift (stain protocol, scanner focus, scale,
    nuclei, class balance), the target of the embedded transfer pair (bench/transfer). The
    same classes (`normal` fully negative, `tumor` with ROI masks) and metrics (PxAP).

    Knobs: `SynthTissueShiftedConfig` in bench/data/synthetic.py; `--set synth-tissue-shifted.KEY=VALUE`.
    """

    name = "synth-tissue-shifted"
    annotation = "mask"
    primary_metric = "PxAP"
    negative_class = 0
    Config = SynthTissueShiftedConfig
    in_grid = False  # a transfer target (`run --transfer`), not one more dataset of the grid
