"""THE DATASET API: everything a dataset plugin file (`datasets/*.py`) imports.

- `Dataset`, `Splits`, `collate`: the plugin base, the splits it returns, how items batch;
- `MetadataDataset` / `MetadataImages`: datasets in the field's metadata format, and
  `FoldedMetadataDataset` for cross-validation folds (GlaS, Camelyon16);
- `VideoDataset` with its frame datasets and the shot clip sampler (YouTube-Objects layout);
- `SyntheticDataset` / `Generated`: the embedded suite, generated on the spot;
- the protocol constants (`IGNORE`, `EVAL_SIZE`), `PaperSchedule` and `register_dataset`.

File formats (the metadata reader and writer, the video layout) and the generators live in
`bench.data`, which imports nothing from here."""
from bench.config import EmptyConfig, PaperSchedule
from bench.dataset.base import Dataset, Splits, collate, make_loader
from bench.dataset.folds import NUM_FOLDS, FoldConfig, FoldedMetadataDataset
from bench.dataset.metadata import MetadataDataset, MetadataImages, load_image, load_mask
from bench.dataset.protocol import EVAL_SIZE, IGNORE
from bench.dataset.synthetic import Generated, SyntheticDataset, SyntheticVideoDataset
from bench.dataset.video import ShotClipSampler, ShotFrames, VideoDataset, VideoFrames, clip_lengths
from bench.data.synthetic import SynthObjectsConfig, SynthTissueConfig, SynthTissueShiftedConfig
from bench.data.synthetic_video import MOTIONS, SynthVideoConfig, prepare_video
from bench.registry import register_dataset

__all__ = ["Dataset", "Splits", "collate", "MetadataDataset", "MetadataImages", "load_image", "load_mask",
           "FoldedMetadataDataset", "FoldConfig", "NUM_FOLDS", "VideoDataset", "VideoFrames", "ShotFrames",
           "ShotClipSampler", "clip_lengths", "SyntheticDataset", "SyntheticVideoDataset", "Generated", "IGNORE", "EVAL_SIZE",
           "PaperSchedule", "EmptyConfig", "register_dataset", "make_loader", "SynthObjectsConfig",
           "SynthTissueConfig", "SynthTissueShiftedConfig", "SynthVideoConfig", "MOTIONS", "prepare_video"]
