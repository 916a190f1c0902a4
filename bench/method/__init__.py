"""THE METHOD API: everything a method plugin file (`methods/*.py`) imports.

- `Method`, `Localization`: the plugin base (`fit`, `localize`) and what `localize` returns;
- `PostHocCAM`: CAMs read from the shared stage-1 classifier (override `cams`);
- `TrainedCAM`: WSOL baselines that train their own classifier, then read a CAM;
- `SeededDecoder` (+ `SeededDecoderConfig`, `SeedConfig`, `DecoderNet`): a decoder trained on
  pseudo-labels drawn from a frozen CAM classifier (F-CAM, NEGEV), `VideoSeededDecoder` (+
  `VideoSeededConfig`) for the video ones (TCAM, CoLo-CAM); `build_cam_seeder` / `seed_cams`:
  the post-hoc CAM that feeds seeds;
- `LocalizerMethod` (+ `LocalizerConfig`): a localizer + classifier on one encoder (Max-Min,
  Min-Max entropy);
- `PooledMapsCAM`: class scores pooled from class maps (max, LSE, WILDCAT, deep MIL, PRM);
- `PixelSupervised` (+ `train_split_records`, `few_shot_records`): the stronger-supervision
  references (`supervision` "full" / "few-shot"), never ranked with the weak methods;
- `train`: the training loop every method shares; `register_method`.
"""
from bench.config import EmptyConfig, FineTuneConfig, ScheduleChanges
from bench.method.base import Localization, Method, PostHocCAM
from bench.method.localizer import LocalizerConfig, LocalizerMethod
from bench.method.pooled import PooledMapsCAM
from bench.method.seeded import (DecoderNet, SeedConfig, SeededDecoder, SeededDecoderConfig, VideoSeededConfig,
                                 VideoSeededDecoder, build_cam_seeder, seed_cams)
from bench.method.supervised import PixelSupervised, few_shot_records, train_split_records
from bench.method.trained import TrainedCAM, cam_layer_transform
from bench.method.training import train
from bench.registry import get_method, register_method

__all__ = ["Method", "Localization", "PostHocCAM", "TrainedCAM", "cam_layer_transform", "SeededDecoder",
           "SeededDecoderConfig", "SeedConfig", "DecoderNet", "VideoSeededConfig", "VideoSeededDecoder",
           "build_cam_seeder", "seed_cams", "LocalizerMethod", "LocalizerConfig", "train",
           "register_method", "get_method", "EmptyConfig", "FineTuneConfig", "ScheduleChanges", "PooledMapsCAM",
           "PixelSupervised", "few_shot_records", "train_split_records"]
