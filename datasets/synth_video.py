from bench.dataset import MOTIONS, SynthVideoConfig, SyntheticVideoDataset, VideoDataset, register_dataset


@register_dataset
class SynthVideo(SyntheticVideoDataset, VideoDataset):
    """Embedded video: shots of an object (told apart by one small part) moving, turning and
    zooming over panning photo clutter, in slow- and fast-motion shots; YTO tree layout, boxes
    on every other val/test frame (CorLoc, also per motion subset).

    Knobs: `SynthVideoConfig` in bench/data/synthetic_video.py; `--set synth-video.KEY=VALUE`.
    """

    name = "synth-video"
    subsets = MOTIONS  # CorLoc-slow, CorLoc-fast
    # 4 random frames per shot per pass: with the protocol's 1, an epoch of the few synthetic
    # shots would be a handful of steps (YTO loaders keep 1)
    train_draws_per_shot = 4
    Config = SynthVideoConfig
