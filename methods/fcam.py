from bench.method import SeededDecoder, SeededDecoderConfig, register_method


@register_method
class FCAM(SeededDecoder):
    """F-CAM (Belharbi et al., WACV 2022): a U-Net decoder on the frozen CAM classifier, trained on
    CAM seeds with partial cross-entropy, dense CRF and a log-barrier size constraint; full-resolution maps."""

    name = "fcam"
    Config = SeededDecoderConfig
