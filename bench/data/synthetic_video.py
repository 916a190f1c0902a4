"""``synth-video``: deterministic synthetic shots written in the YouTube-Objects tree layout.

Every shot holds one object of its class (a textured blob *body* plus one small *part* whose
shape tells the class, as in ``synth-objects``) over a cluttered background cut from the
photographs bundled with scikit-image. Over the shot's ``frames_per_shot`` frames the object
moves (bouncing off the frame border), turns and changes scale while the background pans.
Shots come in two motion regimes, tagged per shot:

``slow``  displacement ~1 px/frame, a few degrees of rotation, slow scale change: the object
          overlaps itself from frame to frame (what temporal pooling of CAMs assumes);
``fast``  displacement of the order of the part's size per frame, fast rotation and scale
          change: the previous frame's CAM points at background in the current frame.

Body colour and texture stay fixed over a shot (colour cues link frames whatever the motion);
every frame gets its own pixel noise.

Layout under a data root ``R`` (the YTO tree: ``<class>/<video>/<shot>/<frame>``)::

    R/synth-video/<class>/video-<v>/shot-<s>/<t>.png        frames
    R/metadata/synth-video/train/image_ids.txt     <shot folder>                 (one line a shot)
    R/metadata/synth-video/train/class_labels.txt  <shot folder>,<class id>
    R/metadata/synth-video/{val,test}/image_ids.txt     <frame>   (annotated frames only)
    R/metadata/synth-video/{val,test}/class_labels.txt  <frame>,<class id>
    R/metadata/synth-video/{val,test}/image_sizes.txt   <frame>,<width>,<height>
    R/metadata/synth-video/{val,test}/localization.txt  <frame>,x0,y0,x1,y1
    R/metadata/synth-video/<split>/subsets.txt     <shot folder>,<slow|fast>
    R/synth-video/GENERATOR.json                   config used; written last

Boxes are inclusive integer pixel extents of the object mask (the object never leaves the
frame). Val/test shots carry boxes on every ``box_every``-th frame; all their frames are on
disk. Every shot is drawn from its own random stream seeded by (seed, split, class, index):
the output is byte-identical for a given config and independent of generation order.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from bench.data.synthetic import (DEFAULT_BACKGROUNDS, PART_SHAPES, SPLITS, _hsv_color, _jittered_photo, _part_mask,
                                  _prepare_dirs, _rng, _save_png, _to_u8, _u, _write_text)

log = logging.getLogger(__name__)

__all__ = ["SynthVideoConfig", "MOTIONS", "generate_video", "motion_overlap", "prepare_video", "shot_frames"]

GENERATOR_VERSION = 1  # bump when the drawing code changes: forces regeneration
NAME = "synth-video"
MOTIONS = ("slow", "fast")


@dataclass(frozen=True)
class Motion:
    """Per-frame motion ranges of one regime (pixels, degrees, fractions of the frame side)."""

    speed: Tuple[float, float]  # object displacement per frame, fraction of the frame side
    turn: Tuple[float, float]  # rotation per frame, degrees
    zoom: Tuple[float, float]  # amplitude of the scale oscillation (scale = 1 + A sin(...))
    zoom_period: Tuple[float, float]  # period of the scale oscillation, frames
    pan: Tuple[float, float]  # background displacement per frame, fraction of the frame side


SLOW = Motion(speed=(0.008, 0.02), turn=(1.0, 4.0), zoom=(0.05, 0.12), zoom_period=(24.0, 40.0),
              pan=(0.004, 0.012))
FAST = Motion(speed=(0.12, 0.18), turn=(18.0, 35.0), zoom=(0.12, 0.2), zoom_period=(4.0, 7.0),
              pan=(0.04, 0.07))


@dataclass(frozen=True)
class SynthVideoConfig:
    """Knobs of ``synth-video`` (sizes as fractions are fractions of ``image_size``).

    seed: master seed; same seed and config -> byte-identical files.
    image_size: square frame side in pixels.
    num_classes: classes, one part shape each (class k's part is PART_SHAPES[k]).
    frames_per_shot: frames T of every shot.
    n_train, n_val, n_test: shots per class in each split; shots alternate slow, fast.
    shots_per_video: consecutive shots of a class grouped in one video folder.
    box_every: val/test shots carry boxes on frames t with t % box_every == box_every - 1.
    backgrounds: scikit-image sample images used for backgrounds.
    bg_crop: crop side range, fraction of the source's shorter side.
    bg_contrast, bg_brightness, bg_saturation, bg_hue_shift: background colour jitter.
    body_size, body_aspect, body_wobble: the body's semi-major axis, minor/major ratio and
        outline irregularity.
    part_size, part_offset: the part's radius and its distance from the body centre (fraction
        of the body radius in that direction).
    texture_strength: range of the texture contrast on the body.
    part_hue_jitter: the part of class k has hue k / num_classes +- this (the body's hue is
        uniform): shape and colour of the part tell the class, so a small CNN trained on a
        few hundred shots learns it (with shape alone it memorised the shots' backgrounds).
    noise_std: std of the per-frame Gaussian pixel noise (0-255 scale).
    """

    seed: int = 0
    image_size: int = 64
    num_classes: int = 4
    frames_per_shot: int = 8
    n_train: int = 80
    n_val: int = 2
    n_test: int = 12
    shots_per_video: int = 2
    box_every: int = 2
    backgrounds: Tuple[str, ...] = DEFAULT_BACKGROUNDS
    bg_crop: Tuple[float, float] = (0.3, 0.8)
    bg_contrast: Tuple[float, float] = (0.35, 0.75)
    bg_brightness: Tuple[float, float] = (0.7, 1.2)
    bg_saturation: Tuple[float, float] = (0.4, 1.2)
    bg_hue_shift: float = 0.5
    body_size: Tuple[float, float] = (0.14, 0.2)
    body_aspect: Tuple[float, float] = (0.6, 1.0)
    body_wobble: float = 0.08
    part_size: Tuple[float, float] = (0.1, 0.13)
    part_offset: Tuple[float, float] = (0.8, 1.0)
    texture_strength: Tuple[float, float] = (0.05, 0.3)
    part_hue_jitter: float = 0.04
    noise_std: float = 4.0

    def class_names(self) -> Tuple[str, ...]:
        return PART_SHAPES[: self.num_classes]

    def validate(self) -> None:
        if not 1 <= self.num_classes <= len(PART_SHAPES):
            raise ValueError(f"SynthVideoConfig.num_classes must be in [1, {len(PART_SHAPES)}], got {self.num_classes}")
        if self.image_size < 32:
            raise ValueError(f"SynthVideoConfig.image_size must be >= 32, got {self.image_size}")
        if self.frames_per_shot < 2:
            raise ValueError(f"SynthVideoConfig.frames_per_shot must be >= 2, got {self.frames_per_shot}")
        if not 1 <= self.box_every <= self.frames_per_shot:
            raise ValueError(f"SynthVideoConfig.box_every must be in [1, frames_per_shot], got {self.box_every}")
        if self.shots_per_video < 1:
            raise ValueError(f"SynthVideoConfig.shots_per_video must be >= 1, got {self.shots_per_video}")
        for split in SPLITS:
            if getattr(self, f"n_{split}") < 0:
                raise ValueError(f"SynthVideoConfig.n_{split} must be >= 0")


def _marker(cfg: SynthVideoConfig) -> dict:
    doc = {"name": NAME, "generator_version": GENERATOR_VERSION, "config": dataclasses.asdict(cfg)}
    return json.loads(json.dumps(doc))


# ----------------------------------------------------------------------------- drawing
def _triangle_wave(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect positions x into [lo, hi] (a point bouncing between two walls)."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, (lo + hi) / 2)
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _body_texture(kind: int, params: np.ndarray, x: np.ndarray, y: np.ndarray, a: float) -> np.ndarray:
    """Texture in [0, 1] on body-frame coordinates (fixed per shot, moves with the body)."""
    if kind == 0:  # stripes
        ang, freq, phase = params[:3]
        t = 0.5 + 0.5 * np.sin(freq / a * 8 * (x * np.cos(ang) + y * np.sin(ang)) + phase)
    elif kind == 1:  # spots
        t = np.zeros_like(x)
        for cx, cy, rad in params.reshape(-1, 3):
            t = np.maximum(t, np.exp(-((x - cx * a) ** 2 + (y - cy * a) ** 2) / (2 * (rad * a) ** 2)))
    else:  # checker
        freq = params[0] / a * 6
        t = 0.5 + 0.5 * np.sign(np.sin(freq * x) * np.sin(freq * y))
    return t.astype(np.float32)


@dataclass
class _Object:
    """Shape and colours of one shot's object, drawn once; `render` poses it."""

    cls: int
    a: float
    b: float
    harm: list
    ps: float
    phi: float
    poff: float
    prot: float
    body_rgb: np.ndarray
    tex_rgb: np.ndarray
    part_rgb: np.ndarray
    tex_kind: int
    tex_params: np.ndarray
    tex_strength: float
    light_dir: float
    light: float

    @classmethod
    def draw(cls, rng, cfg: SynthVideoConfig, label: int) -> "_Object":
        S = cfg.image_size
        a = _u(rng, cfg.body_size) * S
        h = rng.random()
        kind = int(rng.integers(3))
        params = (rng.uniform([0, 0.6, 0], [np.pi, 1.2, 2 * np.pi]) if kind == 0 else
                  rng.uniform([-0.8, -0.8, 0.15] * 6, [0.8, 0.8, 0.3] * 6) if kind == 1 else
                  rng.uniform([0.6], [1.0]))
        return cls(cls=label, a=a, b=a * _u(rng, cfg.body_aspect),
                   harm=[(k, rng.uniform(0, cfg.body_wobble), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)],
                   ps=_u(rng, cfg.part_size) * S, phi=rng.uniform(0, 2 * np.pi), poff=_u(rng, cfg.part_offset),
                   prot=rng.uniform(0, 2 * np.pi),
                   body_rgb=_hsv_color(h, rng.uniform(0.35, 0.9), rng.uniform(0.4, 0.95)),
                   tex_rgb=_hsv_color(h + rng.uniform(-0.15, 0.15), rng.uniform(0.2, 1.0), rng.uniform(0.1, 0.9)),
                   part_rgb=_hsv_color(label / cfg.num_classes + rng.uniform(-1, 1) * cfg.part_hue_jitter,
                                       rng.uniform(0.75, 1.0), rng.uniform(0.7, 1.0)),
                   tex_kind=kind, tex_params=np.asarray(params, dtype=np.float64),
                   tex_strength=_u(rng, cfg.texture_strength), light_dir=rng.uniform(0, 2 * np.pi),
                   light=0.3 * rng.random())

    def radius(self, theta):
        a, b = self.a, self.b
        re = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
        return re * (1 + sum(amp * np.cos(k * theta + ph) for k, amp, ph in self.harm))

    def extent(self, scale: float) -> float:
        """Radius of a disc centred on the body holding the object at `scale`, in any pose."""
        if not hasattr(self, "_reach"):
            _, mask = self.render(0.0, 1.0)
            ys, xs = np.nonzero(mask)
            half = mask.shape[0] // 2
            self._reach = float(np.hypot(xs - half, ys - half).max())
        return scale * self._reach + 1.0

    def _canvas_half(self, scale: float) -> int:
        return int(np.ceil(scale * (self.a * (1 + 3 * max(amp for _, amp, _ in self.harm)) + 2.5 * self.ps))) + 2

    def render(self, rot: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """(rgb [n, n, 3], mask [n, n]) of the object posed at rotation `rot` (radians) and
        `scale`, centred on the canvas (n = 2 * ceil(extent) + 1)."""
        half = self._canvas_half(scale)
        yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32) / scale
        c, s_ = np.cos(rot), np.sin(rot)
        xb, yb = c * xx + s_ * yy, -s_ * xx + c * yy  # body frame (unscaled)
        body = np.hypot(xb, yb) <= self.radius(np.arctan2(yb, xb))
        pr = self.radius(self.phi) * self.poff
        du, dv = xb - pr * np.cos(self.phi), yb - pr * np.sin(self.phi)
        cu, su = np.cos(self.prot), np.sin(self.prot)
        part = _part_mask(PART_SHAPES[self.cls], cu * du + su * dv, -su * du + cu * dv, self.ps)
        t = _body_texture(self.tex_kind, self.tex_params, xb, yb, self.a)[..., None] * self.tex_strength
        rgb = self.body_rgb * (1 - t) + self.tex_rgb * t
        rgb = np.where(part[..., None], self.part_rgb[None, None, :], rgb)
        shade = 1.0 + self.light * (xb * np.cos(self.light_dir) + yb * np.sin(self.light_dir)) / max(self.a, 1.0)
        return (rgb * shade[..., None]).astype(np.float32), body | part


def _trajectory(rng, cfg: SynthVideoConfig, motion: Motion, obj: _Object):
    """Per-frame (cx, cy, rot, scale) and background offsets (bx, by)."""
    S, T = cfg.image_size, cfg.frames_per_shot
    t = np.arange(T, dtype=np.float64)
    amp, period = _u(rng, motion.zoom), _u(rng, motion.zoom_period)
    scale = 1.0 + amp * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    reach = obj.extent(float(scale.max()))
    lo, hi = reach, S - 1 - reach
    speed = _u(rng, motion.speed) * S
    heading = rng.uniform(0, 2 * np.pi)
    x0, y0 = rng.uniform(lo, hi) if hi > lo else S / 2, rng.uniform(lo, hi) if hi > lo else S / 2
    cx = _triangle_wave(x0 + speed * np.cos(heading) * t, lo, hi)
    cy = _triangle_wave(y0 + speed * np.sin(heading) * t, lo, hi)
    turn = np.deg2rad(_u(rng, motion.turn)) * (1 if rng.random() < 0.5 else -1)
    rot = rng.uniform(0, 2 * np.pi) + turn * t
    pan = _u(rng, motion.pan) * S
    pan_heading = rng.uniform(0, 2 * np.pi)
    bx, by = pan * np.cos(pan_heading) * t, pan * np.sin(pan_heading) * t
    return cx, cy, rot, scale, bx - bx.min(), by - by.min()


def shot_frames(cfg: SynthVideoConfig, split: str, label: int, index: int):
    """Render one shot: (frames uint8 [T, S, S, 3], masks bool [T, S, S], boxes int [T, 4],
    motion name). Deterministic in (cfg, split, label, index)."""
    rng = _rng(cfg.seed, split, label, index, salt=303)
    S, T = cfg.image_size, cfg.frames_per_shot
    motion_name = MOTIONS[index % len(MOTIONS)]
    motion = SLOW if motion_name == "slow" else FAST
    obj = _Object.draw(rng, cfg, label)
    cx, cy, rot, scale, bx, by = _trajectory(rng, cfg, motion, obj)
    pad = int(np.ceil(max(bx.max(), by.max()))) + 1
    canvas = _jittered_photo(rng, cfg, S + pad, flips=False)
    frames = np.zeros((T, S, S, 3), dtype=np.uint8)
    masks = np.zeros((T, S, S), dtype=bool)
    boxes = np.zeros((T, 4), dtype=np.int64)
    for k in range(T):
        ox, oy = int(round(bx[k])), int(round(by[k]))
        img = canvas[oy:oy + S, ox:ox + S].copy()
        rgb, m = obj.render(rot[k], scale[k])
        n = m.shape[0]
        half = n // 2
        x0, y0 = int(round(cx[k])) - half, int(round(cy[k])) - half
        # clip the canvas to the frame (the trajectory keeps the object itself inside)
        sx0, sy0 = max(0, -x0), max(0, -y0)
        sx1, sy1 = min(n, S - x0), min(n, S - y0)
        region_m = m[sy0:sy1, sx0:sx1]
        mask = np.zeros((S, S), dtype=bool)
        mask[y0 + sy0:y0 + sy1, x0 + sx0:x0 + sx1] = region_m
        img[mask] = rgb[sy0:sy1, sx0:sx1][region_m]
        img = img + rng.normal(0, cfg.noise_std / 255.0, size=img.shape).astype(np.float32)
        frames[k] = _to_u8(img)
        masks[k] = mask
        ys, xs = np.nonzero(mask)
        boxes[k] = (xs.min(), ys.min(), xs.max(), ys.max())
    return frames, masks, boxes, motion_name


def motion_overlap(cfg: Optional[SynthVideoConfig] = None, split: str = "test", stride: int = 1) -> dict:
    """How much each frame's object overlaps the previous frame's, per motion regime, over the
    shots of `split`: {motion: {"iou": mean IoU of consecutive object masks, "covered": mean
    share of the object that the previous frame's object covers}}. `stride` > 1 measures on
    masks max-pooled by `stride` (a CAM's resolution: what CAM-TMP pools)."""
    cfg = cfg or SynthVideoConfig()
    sums = {m: np.zeros(3) for m in MOTIONS}  # iou, covered, pairs
    for label in range(cfg.num_classes):
        for index in range(getattr(cfg, f"n_{split}")):
            _, masks, _, motion = shot_frames(cfg, split, label, index)
            T, S, _ = masks.shape
            h = S // stride
            pooled = masks[:, :h * stride, :h * stride].reshape(T, h, stride, h, stride).any(axis=(2, 4))
            now, before = pooled[1:], pooled[:-1]
            inter = (now & before).sum(axis=(1, 2))
            sums[motion] += (np.sum(inter / (now | before).sum(axis=(1, 2))), np.sum(inter / now.sum(axis=(1, 2))),
                             T - 1)
    return {m: {"iou": float(v[0] / v[2]), "covered": float(v[1] / v[2])} for m, v in sums.items() if v[2]}


# ----------------------------------------------------------------------------- writing
def _shot_path(cfg: SynthVideoConfig, split: str, label: int, index: int) -> str:
    """`<class>/video-<v>/shot-<s>`: videos and shots numbered per class across the splits
    (train first), so no folder is shared by two splits."""
    earlier = SPLITS[: SPLITS.index(split)]
    shot = sum(getattr(cfg, f"n_{s}") for s in earlier) + index
    spv = cfg.shots_per_video
    video = sum(-(-getattr(cfg, f"n_{s}") // spv) for s in earlier) + index // spv
    return f"{cfg.class_names()[label]}/video-{video:04d}/shot-{shot:06d}"


def generate_video(root: Path, cfg: Optional[SynthVideoConfig] = None) -> None:
    """Write ``synth-video`` under ``root`` (layout in the module docstring)."""
    cfg = cfg or SynthVideoConfig()
    cfg.validate()
    img_root, meta_root = _prepare_dirs(root, NAME)
    S = cfg.image_size
    for split in SPLITS:
        meta = {k: [] for k in ("ids", "labels", "sizes", "boxes", "subsets")}
        for label in range(cfg.num_classes):
            for index in range(getattr(cfg, f"n_{split}")):
                shot = _shot_path(cfg, split, label, index)
                frames, _, boxes, motion = shot_frames(cfg, split, label, index)
                meta["subsets"].append(f"{shot},{motion}")
                if split == "train":
                    meta["ids"].append(shot)
                    meta["labels"].append(f"{shot},{label}")
                for k in range(cfg.frames_per_shot):
                    path = f"{shot}/{k:06d}.png"
                    _save_png(frames[k], img_root / path, "RGB")
                    if split != "train" and k % cfg.box_every == cfg.box_every - 1:
                        meta["ids"].append(path)
                        meta["labels"].append(f"{path},{label}")
                        meta["sizes"].append(f"{path},{S},{S}")
                        meta["boxes"].append(f"{path},{','.join(str(int(v)) for v in boxes[k])}")
        files = {"image_ids.txt": "ids", "class_labels.txt": "labels", "subsets.txt": "subsets"}
        if split != "train":
            files.update({"image_sizes.txt": "sizes", "localization.txt": "boxes"})
        for file_name, key in files.items():
            _write_text(meta_root / split / file_name, meta[key])
    marker = img_root / "GENERATOR.json"
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(_marker(cfg), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, marker)


def prepare_video(root: Path, cfg: Optional[SynthVideoConfig] = None, force: bool = False) -> Path:
    """Generate ``synth-video`` under ``root`` unless GENERATOR.json records this config."""
    cfg = cfg if cfg is not None else SynthVideoConfig()
    root = Path(root)
    marker = root / NAME / "GENERATOR.json"
    if not force and marker.exists():
        try:
            if json.loads(marker.read_text()) == _marker(cfg):
                return root
        except (OSError, ValueError):
            pass
    log.info("generating %s under %s", NAME, root)
    start = time.perf_counter()
    generate_video(root, cfg)
    log.info("generated %s in %.1f s", NAME, time.perf_counter() - start)
    return root
