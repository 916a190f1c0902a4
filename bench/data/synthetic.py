"""Deterministic synthetic WSOL datasets written in the field's metadata format.

Two generators, both pure numpy + Pillow + scikit-image (no torch, no network):

``synth-objects`` (box + mask annotation)
    Every image holds one object pasted on a cluttered background cut from the photographs
    that ship inside scikit-image. An object is a textured blob (the *body*, drawn from one
    shape family for every class) plus ONE small *part* whose shape alone tells the class
    (triangle, cross, ring, bar, star, crescent). Position, scale, rotation, body colour,
    body texture and part colour are drawn independently of the class, so a classifier has
    to look at the part; a plain CAM then tends to light the part and miss most of the body,
    while the ground truth box/mask covers body + part.

``synth-tissue`` (mask annotation, fully negative images), and ``synth-tissue-shifted``
    Histology-like crops of scikit-image's immunohistochemistry slide with random
    rotation/flips and stain jitter in HED space. Class 0 ``normal`` has no ROI (empty mask
    field). Class 1 ``tumor`` has blob-shaped ROIs covering 10-40 % of the image in which the
    tissue is denser: more and darker haematoxylin "nuclei" and a shifted stain balance.
    ``synth-tissue-shifted`` is the same generator with other parameters
    (`SynthTissueShiftedConfig`: stain protocol, focus, scale, nuclei, class balance), the
    target domain of the transfer track (bench/transfer).

Layout under a data root ``R`` for a dataset ``NAME``::

    R/NAME/<split>/<class>/<id>.png          RGB image
    R/NAME/<split>/<class>/<id>_mask.png     0/255 L-mode mask (only images with an ROI)
    R/metadata/NAME/<split>/image_ids.txt        <path>
    R/metadata/NAME/<split>/class_labels.txt     <path>,<class id>
    R/metadata/NAME/<split>/image_sizes.txt      <path>,<width>,<height>
    R/metadata/NAME/<split>/localization.txt     boxes (objects) or masks (tissue)
    R/metadata/NAME/<split>/localization_masks.txt   (objects only) mask lines, for PxAP
    R/NAME/GENERATOR.json                    config used; written last

Paths in the metadata are relative to ``R/NAME``. Boxes are ``x0,y0,x1,y1``, inclusive
integer pixel coordinates of the mask extent. Mask lines are ``<path>,<mask>,<ignore>``
(one line per image here; the ignore field is always empty, the mask field is empty for a
fully negative image).

Every image is drawn from its own random stream, seeded by (seed, split, class, index), so
the output is byte-identical for a given config and independent of generation order.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage

from skimage import color as skcolor
from skimage import data as skdata

from bench.config import added_later, to_jsonable

try:  # tqdm is a soft dependency: generation still works without it
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    def tqdm(it, **_kw):
        return it

log = logging.getLogger(__name__)

__all__ = [
    "SynthObjectsConfig", "SynthTissueConfig", "SynthTissueShiftedConfig", "generate_objects", "generate_tissue",
    "prepare", "GENERATORS", "PART_SHAPES", "SPLITS",
]

SPLITS = ("train", "val", "test")
GENERATOR_VERSION = 1          # bump when the drawing code changes: forces regeneration
PART_SHAPES = ("triangle", "cross", "ring", "bar", "star", "crescent")
# photographs bundled inside scikit-image's package data (no pooch download needed)
DEFAULT_BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick",
                       "grass", "gravel", "coins", "moon")


# --------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class SynthObjectsConfig:
    """Knobs of ``synth-objects``. Sizes given as fractions are fractions of ``image_size``.

    seed: master seed; same seed and config -> byte-identical files.
    image_size: square image side in pixels.
    num_classes: number of classes, one part shape each (<= len(PART_SHAPES)); class k's
        part is PART_SHAPES[k] and its folder is named after it.
    n_train, n_val, n_test: images per class in each split (val = "train-fullsup").
    backgrounds: names of scikit-image sample images used for backgrounds.
    bg_crop: range of the crop side, as a fraction of the source's shorter side.
    bg_brightness, bg_contrast, bg_saturation: multiplicative jitter ranges (contrast < 1
        damps the clutter: with full-contrast clutter and small parts a small CNN trained
        from scratch on 100 images/class stayed at chance for minutes on CPU).
    bg_hue_shift: max absolute hue rotation (fraction of the colour wheel).
    body_size: range of the body's semi-major axis.
    body_aspect: range of minor/major axis ratio.
    body_wobble: max amplitude of each low-frequency radial harmonic (blob irregularity).
    part_size: range of the part's radius.
    part_offset: part centre distance from the body centre, as a fraction of the body
        radius in that direction (1.0 = centred on the outline, half sticking out).
    texture_strength: range of the texture contrast on the body (0 = flat colour).
    shading: max strength of the linear lighting gradient over the object.
    noise_std: std of the i.i.d. Gaussian pixel noise added last (0-255 scale).
    """

    seed: int = 0
    image_size: int = 96
    num_classes: int = 4
    n_train: int = 200
    # as many as test: at 5 per class the validation MaxBoxAccV2 of a CAM had a bootstrap std of
    # ~6 points and picked checkpoints by noise (docs/protocol.md, "Model selection")
    n_val: int = 50
    n_test: int = 50
    backgrounds: Tuple[str, ...] = DEFAULT_BACKGROUNDS
    bg_crop: Tuple[float, float] = (0.25, 0.9)
    bg_brightness: Tuple[float, float] = (0.7, 1.25)
    bg_contrast: Tuple[float, float] = (0.35, 0.75)
    bg_saturation: Tuple[float, float] = (0.4, 1.4)
    bg_hue_shift: float = 0.5
    body_size: Tuple[float, float] = (0.13, 0.25)
    body_aspect: Tuple[float, float] = (0.55, 1.0)
    body_wobble: float = 0.08
    part_size: Tuple[float, float] = (0.10, 0.14)
    part_offset: Tuple[float, float] = (0.75, 1.05)
    texture_strength: Tuple[float, float] = (0.05, 0.3)
    shading: float = 0.3
    noise_std: float = 4.0

    name = "synth-objects"

    def class_names(self) -> Tuple[str, ...]:
        return PART_SHAPES[: self.num_classes]

    def count(self, split: str, cls: int) -> int:
        return getattr(self, f"n_{split}")

    def validate(self) -> None:
        if not 1 <= self.num_classes <= len(PART_SHAPES):
            raise ValueError(f"num_classes must be in [1, {len(PART_SHAPES)}]")
        if self.image_size < 32:
            raise ValueError("image_size must be >= 32")
        _check_counts(self)


@dataclass(frozen=True)
class SynthTissueConfig:
    """Knobs of ``synth-tissue`` (class 0 normal: no ROI; class 1 tumor: ROI masks).

    seed: master seed; same seed and config -> byte-identical files.
    image_size: square image side in pixels.
    n_train, n_val, n_test: images per class in each split.
    crop: range of the crop side taken from the 512x512 slide before resizing.
    stain_scale: per-image multiplicative jitter of each HED channel.
    stain_shift: per-image additive jitter of each HED channel (in HED optical density).
    roi_fraction: range of the fraction of the image covered by tumor ROIs.
    roi_smoothness: sigma (pixels) of the smoothed noise field thresholded into ROI blobs;
        larger -> fewer, rounder blobs.
    roi_max_blobs: keep at most this many connected ROI blobs (largest first).
    tumor_h_gain: multiplicative gain of the haematoxylin channel inside the ROI.
    tumor_e_shift: eosin optical density added inside the ROI (the slide itself carries
        almost no eosin, so this is a faint pink cast; the global stain_shift is of the
        same order, so colour alone does not separate the classes).
    tumor_dab_gain: multiplicative gain of the DAB channel inside the ROI.
    tumor_nuclei_density: extra nuclei per pixel inside the ROI.
    tumor_nuclei_radius: range of the sigma (pixels) of an extra nucleus.
    tumor_nuclei_od: haematoxylin optical density added at a nucleus centre (range).
    edge_softness: sigma (pixels) of the blend between normal and tumor texture at the ROI
        border (the mask itself stays binary).
    noise_std: std of the i.i.d. Gaussian pixel noise added last (0-255 scale).
    stain_gain, stain_offset: a constant per-channel (H, E, DAB) gain and optical-density
        offset applied to every image after the per-image jitter: a lab's stain protocol
        (the domain shift of ``synth-tissue-shifted``; identity by default).
    blur: sigma (pixels) of a Gaussian blur of the optical densities before the noise, a
        scanner's focus (0: none).
    class_weights: images per class in each split are ``round(n_<split> * weight)``, the
        class balance (normal, tumor); equal by default.
    """

    seed: int = 0
    image_size: int = 96
    n_train: int = 100
    n_val: int = 50  # as many as test: selection on 5 per class did worse than the last epoch
    n_test: int = 50
    crop: Tuple[int, int] = (80, 160)
    stain_scale: Tuple[float, float] = (0.8, 1.2)
    stain_shift: Tuple[float, float] = (-0.004, 0.004)
    roi_fraction: Tuple[float, float] = (0.10, 0.40)
    roi_smoothness: float = 9.0
    roi_max_blobs: int = 3
    tumor_h_gain: Tuple[float, float] = (1.2, 1.5)
    tumor_e_shift: Tuple[float, float] = (0.002, 0.007)
    tumor_dab_gain: Tuple[float, float] = (0.55, 0.8)
    tumor_nuclei_density: float = 0.012
    tumor_nuclei_radius: Tuple[float, float] = (1.0, 1.8)
    tumor_nuclei_od: Tuple[float, float] = (0.035, 0.07)
    edge_softness: float = 1.0
    noise_std: float = 3.0
    # added with the shifted variant; their defaults reproduce the images from before, and
    # `to_jsonable` (configuration hashes) and GENERATOR.json leave them out at default
    stain_gain: Tuple[float, float, float] = added_later((1.0, 1.0, 1.0))
    stain_offset: Tuple[float, float, float] = added_later((0.0, 0.0, 0.0))
    blur: float = added_later(0.0)
    class_weights: Tuple[float, float] = added_later((1.0, 1.0))

    name = "synth-tissue"

    def class_names(self) -> Tuple[str, ...]:
        return ("normal", "tumor")

    @property
    def num_classes(self) -> int:
        return 2

    def validate(self) -> None:
        if self.image_size < 32:
            raise ValueError("image_size must be >= 32")
        lo, hi = self.roi_fraction
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError("roi_fraction must satisfy 0 < lo <= hi < 1")
        if len(self.stain_gain) != 3 or len(self.stain_offset) != 3:
            raise ValueError("stain_gain and stain_offset need one value per H, E, DAB channel")
        if len(self.class_weights) != 2 or min(self.class_weights) < 0:
            raise ValueError("class_weights needs two non-negative values (normal, tumor)")
        if self.blur < 0:
            raise ValueError("blur must be >= 0")
        _check_counts(self)

    def count(self, split: str, cls: int) -> int:
        return int(round(getattr(self, f"n_{split}") * self.class_weights[cls]))


@dataclass(frozen=True)
class SynthTissueShiftedConfig(SynthTissueConfig):
    """``synth-tissue-shifted``: the tissue generator with a domain shift, the embedded target
    of the transfer track (source ``synth-tissue``). Against the source defaults: a different
    stain protocol (weaker haematoxylin, stronger eosin, a pink offset), a blurrier scanner,
    a coarser scale (larger crops of the slide), tumour nuclei larger and sparser, and a
    different class balance (70 % normal in every split). Its own seed, so no image repeats
    a source image's draws."""

    seed: int = 1
    crop: Tuple[int, int] = (150, 260)
    tumor_nuclei_density: float = 0.008
    tumor_nuclei_radius: Tuple[float, float] = (1.4, 2.4)
    stain_gain: Tuple[float, float, float] = (0.75, 1.6, 0.9)
    stain_offset: Tuple[float, float, float] = (-0.004, 0.015, 0.0)
    blur: float = 0.8
    class_weights: Tuple[float, float] = (1.4, 0.6)

    name = "synth-tissue-shifted"


def _check_counts(cfg) -> None:
    for split in SPLITS:
        if getattr(cfg, f"n_{split}") < 0:
            raise ValueError(f"n_{split} must be >= 0")


def config_dict(name: str, cfg) -> dict:
    """The JSON document stored in GENERATOR.json (lists, not tuples, so it round-trips)."""
    doc = {"name": name, "generator_version": GENERATOR_VERSION, "config": to_jsonable(cfg)}
    return json.loads(json.dumps(doc))


# --------------------------------------------------------------------------- helpers
def _rng(seed: int, split: str, cls: int, idx: int, salt: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([salt, seed, SPLITS.index(split), cls, idx]))


def _u(rng: np.random.Generator, lohi: Sequence[float]) -> float:
    return float(rng.uniform(lohi[0], lohi[1]))


_SOURCES: Dict[str, np.ndarray] = {}


def _source(name: str) -> np.ndarray:
    """A bundled scikit-image sample as float32 RGB in [0, 1] (cached)."""
    if name not in _SOURCES:
        loader = getattr(skdata, name, None)
        if loader is None:
            raise ValueError(f"skimage.data has no sample image {name!r}")
        img = np.asarray(loader())
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = img[:, :, :3].astype(np.float32) / 255.0
        _SOURCES[name] = img
    return _SOURCES[name]


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Float [0,1] HxWx3 -> size x size via Pillow's (deterministic) bilinear filter."""
    u8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    out = Image.fromarray(u8).resize((size, size), Image.BILINEAR)
    return np.asarray(out, dtype=np.float32) / 255.0


def _to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _save_png(arr: np.ndarray, path: Path, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.ascontiguousarray(arr))
    assert img.mode == mode, (img.mode, mode)
    img.save(path, format="PNG", optimize=False, compress_level=6)


def _hsv_color(h: float, s: float, v: float) -> np.ndarray:
    return skcolor.hsv2rgb(np.array([[[h % 1.0, s, v]]], dtype=np.float64))[0, 0].astype(np.float32)


# ------------------------------------------------------------------- synth-objects
def _jittered_photo(rng: np.random.Generator, cfg, side: int, flips: bool = True) -> np.ndarray:
    """A random crop of one of `cfg.backgrounds`, resized to `side` x `side`, optionally flipped,
    rotated by a multiple of 90 degrees and colour-jittered (`cfg.bg_*`); float RGB in [0, 1].
    Shared by synth-objects (backgrounds) and synth-video (the canvas its frames pan over)."""
    src = _source(cfg.backgrounds[int(rng.integers(len(cfg.backgrounds)))])
    h, w = src.shape[:2]
    crop = int(round(_u(rng, cfg.bg_crop) * min(h, w)))
    crop = max(min(crop, min(h, w)), 8)
    y0 = int(rng.integers(0, h - crop + 1))
    x0 = int(rng.integers(0, w - crop + 1))
    img = _resize(src[y0:y0 + crop, x0:x0 + crop], side)
    if flips:
        if rng.random() < 0.5:
            img = img[:, ::-1]
        if rng.random() < 0.5:
            img = img[::-1, :]
    k = int(rng.integers(4))
    img = np.rot90(img, k)
    # colour jitter: hue rotation, saturation, contrast, brightness (grey sources get tinted)
    hsv = skcolor.rgb2hsv(img)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-cfg.bg_hue_shift, cfg.bg_hue_shift)) % 1.0
    if hsv[..., 1].mean() < 0.05:           # a grey photograph: give it a random tint
        hsv[..., 0] = rng.random()
        hsv[..., 1] = rng.uniform(0.1, 0.4)
    hsv[..., 1] = np.clip(hsv[..., 1] * _u(rng, cfg.bg_saturation), 0, 1)
    img = skcolor.hsv2rgb(hsv).astype(np.float32)
    mean = img.mean()
    img = (img - mean) * _u(rng, cfg.bg_contrast) + mean
    img = img * _u(rng, cfg.bg_brightness)
    return np.clip(img, 0, 1).astype(np.float32)


def _part_mask(shape: str, u: np.ndarray, v: np.ndarray, s: float) -> np.ndarray:
    """Inside-test of a part shape of radius ``s`` in its own (rotated) frame."""
    r = np.hypot(u, v)
    if shape == "triangle":   # equilateral, circumradius s
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = np.pi / 2 + 2 * np.pi * k / 3
            inside &= (u * np.cos(a) + v * np.sin(a)) >= -0.5 * s
        return inside
    if shape == "cross":
        t = 0.3 * s
        return ((np.abs(u) <= s) & (np.abs(v) <= t)) | ((np.abs(v) <= s) & (np.abs(u) <= t))
    if shape == "ring":
        return (r <= s) & (r >= 0.5 * s)
    if shape == "bar":
        return (np.abs(u) <= 1.15 * s) & (np.abs(v) <= 0.32 * s)
    if shape == "star":       # five points, inner radius 0.45 s
        th = np.arctan2(v, u)
        frac = np.abs(((th * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2   # 1 at a tip, 0 between
        return r <= s * (0.42 + 0.58 * frac ** 1.5)
    if shape == "crescent":
        return (r <= s) & (np.hypot(u - 0.5 * s, v) > 0.75 * s)
    raise ValueError(f"unknown part shape {shape!r}")


def _texture(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, scale: float) -> np.ndarray:
    """A class-independent body texture in [0, 1] on local coordinates."""
    kind = int(rng.integers(4))
    if kind == 0:        # stripes
        a = rng.uniform(0, np.pi)
        f = rng.uniform(0.25, 0.6)
        t = 0.5 + 0.5 * np.sin(f * (x * np.cos(a) + y * np.sin(a)) + rng.uniform(0, 2 * np.pi))
    elif kind == 1:      # spots
        n = int(rng.integers(4, 12))
        t = np.zeros_like(x)
        for _ in range(n):
            cx, cy = rng.uniform(-scale, scale, size=2)
            rad = rng.uniform(0.1, 0.25) * scale
            t = np.maximum(t, np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * rad ** 2)))
    elif kind == 2:      # smooth noise
        noise = rng.standard_normal(x.shape).astype(np.float32)
        t = ndimage.gaussian_filter(noise, rng.uniform(1.0, 2.5))
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
    else:                # checker / grid
        f = rng.uniform(0.25, 0.5)
        t = 0.5 + 0.5 * np.sign(np.sin(f * x) * np.sin(f * y))
    return t.astype(np.float32)


def _draw_object(rng: np.random.Generator, cfg: SynthObjectsConfig, cls: int):
    """Draw one object on a local canvas. Returns (rgb HxWx3, mask HxW bool), cropped to
    the mask extent, or None if it does not fit in the image (the caller redraws)."""
    S = cfg.image_size
    a = _u(rng, cfg.body_size) * S
    b = a * _u(rng, cfg.body_aspect)
    rot = rng.uniform(0, 2 * np.pi)
    harm = [(k, rng.uniform(0, cfg.body_wobble), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)]
    ps = _u(rng, cfg.part_size) * S
    phi = rng.uniform(0, 2 * np.pi)         # direction of the part, in the body frame
    poff = _u(rng, cfg.part_offset)
    prot = rng.uniform(0, 2 * np.pi)

    def radius(theta):
        re = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
        return re * (1 + sum(amp * np.cos(k * theta + ph) for k, amp, ph in harm))

    half = int(np.ceil(a * (1 + 3 * cfg.body_wobble) + 2.5 * ps)) + 2
    if 2 * half + 1 > S * 1.6:
        return None
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    c, s_ = np.cos(rot), np.sin(rot)
    xb = c * xx + s_ * yy          # body frame
    yb = -s_ * xx + c * yy
    body = np.hypot(xb, yb) <= radius(np.arctan2(yb, xb))
    pr = radius(phi) * poff
    pcx, pcy = pr * np.cos(phi), pr * np.sin(phi)
    cu, su = np.cos(prot), np.sin(prot)
    du, dv = xb - pcx, yb - pcy
    part = _part_mask(PART_SHAPES[cls], cu * du + su * dv, -su * du + cu * dv, ps)

    # colours: body hue uniform; part hue opposite-ish, both independent of the class
    h = rng.random()
    body_rgb = _hsv_color(h, rng.uniform(0.3, 0.9), rng.uniform(0.35, 0.95))
    tex_rgb = _hsv_color(h + rng.uniform(-0.15, 0.15), rng.uniform(0.2, 1.0), rng.uniform(0.1, 0.9))
    part_rgb = _hsv_color(h + rng.uniform(0.3, 0.7), rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0))
    t = _texture(rng, xb, yb, a)[..., None] * _u(rng, cfg.texture_strength)
    rgb = body_rgb * (1 - t) + tex_rgb * t
    rgb = np.where(part[..., None], part_rgb[None, None, :], rgb)
    la = rng.uniform(0, 2 * np.pi)
    light = 1.0 + cfg.shading * rng.random() * (xx * np.cos(la) + yy * np.sin(la)) / half
    rgb = rgb * light[..., None]
    mask = body | part
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    if y1 - y0 + 1 > S or x1 - x0 + 1 > S:
        return None
    return rgb[y0:y1 + 1, x0:x1 + 1].astype(np.float32), mask[y0:y1 + 1, x0:x1 + 1]


def _objects_sample(cfg: SynthObjectsConfig, split: str, cls: int, idx: int):
    rng = _rng(cfg.seed, split, cls, idx, salt=101)
    S = cfg.image_size
    bg = _jittered_photo(rng, cfg, cfg.image_size)
    for _ in range(100):
        obj = _draw_object(rng, cfg, cls)
        if obj is not None:
            break
    else:  # pragma: no cover - only with absurd configs
        raise RuntimeError("could not fit an object in the image; shrink body_size/part_size")
    rgb, m = obj
    h, w = m.shape
    oy = int(rng.integers(0, S - h + 1))
    ox = int(rng.integers(0, S - w + 1))
    mask = np.zeros((S, S), dtype=bool)
    mask[oy:oy + h, ox:ox + w] = m
    img = bg.copy()
    region = img[oy:oy + h, ox:ox + w]
    region[m] = rgb[m]
    img = img + rng.normal(0, cfg.noise_std / 255.0, size=img.shape).astype(np.float32)
    box = (ox, oy, ox + w - 1, oy + h - 1)     # inclusive mask extent
    return _to_u8(img), mask, box


# -------------------------------------------------------------------- synth-tissue
_HED_SLIDE: Optional[np.ndarray] = None


def _slide_hed() -> np.ndarray:
    global _HED_SLIDE
    if _HED_SLIDE is None:
        _HED_SLIDE = skcolor.rgb2hed(skdata.immunohistochemistry()).astype(np.float32)
    return _HED_SLIDE


def _roi_mask(rng: np.random.Generator, cfg: SynthTissueConfig) -> np.ndarray:
    S = cfg.image_size
    target = _u(rng, cfg.roi_fraction)
    for _ in range(20):
        field = ndimage.gaussian_filter(rng.standard_normal((S, S)), cfg.roi_smoothness,
                                        mode="reflect")
        mask = field > np.quantile(field, 1.0 - target)
        lab, n = ndimage.label(mask)
        if n > cfg.roi_max_blobs:
            sizes = ndimage.sum(mask, lab, index=np.arange(1, n + 1))
            keep = np.argsort(-sizes, kind="stable")[: cfg.roi_max_blobs] + 1
            mask = np.isin(lab, keep)
        mask = ndimage.binary_fill_holes(mask)
        frac = mask.mean()
        if cfg.roi_fraction[0] <= frac <= cfg.roi_fraction[1]:
            return mask
    # fall back: threshold exactly at the target (still inside the range)
    return field > np.quantile(field, 1.0 - target)


def _tissue_sample(cfg: SynthTissueConfig, cls: int, split: str, idx: int):
    rng = _rng(cfg.seed, split, cls, idx, salt=202)
    S = cfg.image_size
    hed = _slide_hed()
    H, W = hed.shape[:2]
    side = int(rng.integers(cfg.crop[0], cfg.crop[1] + 1))
    side = min(side, H, W)
    y0 = int(rng.integers(0, H - side + 1))
    x0 = int(rng.integers(0, W - side + 1))
    crop = hed[y0:y0 + side, x0:x0 + side]
    # resize each HED channel (bilinear, scipy: deterministic and float-exact)
    zoom = S / side
    crop = np.stack([ndimage.zoom(crop[..., c], zoom, order=1)[:S, :S] for c in range(3)], -1)
    if crop.shape[0] != S or crop.shape[1] != S:   # rounding in zoom
        crop = np.pad(crop, ((0, S - crop.shape[0]), (0, S - crop.shape[1]), (0, 0)), mode="edge")
    crop = np.rot90(crop, int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.ascontiguousarray(crop, dtype=np.float32)

    mask = None
    if cls == 1:
        mask = _roi_mask(rng, cfg)
        alpha = ndimage.gaussian_filter(mask.astype(np.float32), cfg.edge_softness) \
            if cfg.edge_softness > 0 else mask.astype(np.float32)
        tumor = crop.copy()
        tumor[..., 0] *= _u(rng, cfg.tumor_h_gain)
        tumor[..., 1] += _u(rng, cfg.tumor_e_shift)
        tumor[..., 2] *= _u(rng, cfg.tumor_dab_gain)
        # extra nuclei: Poisson points blurred into small dark haematoxylin blobs
        n = rng.poisson(cfg.tumor_nuclei_density * S * S)
        pts = np.zeros((S, S), dtype=np.float32)
        ys = rng.integers(0, S, size=n)
        xs = rng.integers(0, S, size=n)
        ods = rng.uniform(*cfg.tumor_nuclei_od, size=n).astype(np.float32)
        np.add.at(pts, (ys, xs), ods)
        sig = _u(rng, cfg.tumor_nuclei_radius)
        nuclei = ndimage.gaussian_filter(pts, sig) * (2 * np.pi * sig * sig)
        tumor[..., 0] += nuclei
        crop = crop * (1 - alpha[..., None]) + tumor * alpha[..., None]
    # global stain jitter (both classes alike)
    scale = rng.uniform(*cfg.stain_scale, size=3).astype(np.float32)
    shift = rng.uniform(*cfg.stain_shift, size=3).astype(np.float32)
    crop = crop * scale + shift
    crop = crop * np.asarray(cfg.stain_gain, np.float32) + np.asarray(cfg.stain_offset, np.float32)
    if cfg.blur > 0:
        crop = ndimage.gaussian_filter(crop, (cfg.blur, cfg.blur, 0))
    rgb = skcolor.hed2rgb(crop).astype(np.float32)
    rgb = rgb + rng.normal(0, cfg.noise_std / 255.0, size=rgb.shape).astype(np.float32)
    return _to_u8(rgb), mask


# ----------------------------------------------------------------------- writing
def _prepare_dirs(root: Path, name: str) -> Tuple[Path, Path]:
    root = Path(root)
    img_root = root / name
    meta_root = root / "metadata" / name
    marker = img_root / "GENERATOR.json"
    if marker.exists():
        marker.unlink()                  # invalidate first: an interrupted run is detected
    for d in (img_root, meta_root):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    return img_root, meta_root


def _write_text(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def _write_meta(meta_root: Path, meta: dict, localization: Dict[str, str]) -> None:
    """Write every split's metadata files; `localization` maps file name -> key of `meta`."""
    files = {"image_ids.txt": "ids", "class_labels.txt": "labels", "image_sizes.txt": "sizes", **localization}
    for split in SPLITS:
        for file_name, key in files.items():
            _write_text(meta_root / split / file_name, meta[split][key])


def _finish(img_root: Path, name: str, cfg) -> None:
    marker = img_root / "GENERATOR.json"
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(config_dict(name, cfg), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, marker)


def _jobs(cfg):
    return [(split, cls, i) for split in SPLITS for cls in range(cfg.num_classes)
            for i in range(cfg.count(split, cls))]


def _image_path(cfg, split: str, cls: int, i: int) -> str:
    """The image's path; ids count on over the classes of the split (equal counts: cls * n + i)."""
    first = sum(cfg.count(split, c) for c in range(cls))
    return f"{split}/{cfg.class_names()[cls]}/{first + i:06d}.png"


def generate_objects(root: Path, cfg: Optional[SynthObjectsConfig] = None) -> None:
    """Write ``synth-objects`` under ``root`` (see the module docstring for the layout)."""
    cfg = cfg or SynthObjectsConfig()
    cfg.validate()
    name = SynthObjectsConfig.name
    img_root, meta_root = _prepare_dirs(root, name)
    meta = {s: {"ids": [], "labels": [], "sizes": [], "boxes": [], "masks": []} for s in SPLITS}
    for split, cls, i in tqdm(_jobs(cfg), desc=name, unit="img", leave=False):
        path = _image_path(cfg, split, cls, i)
        mpath = path[:-4] + "_mask.png"
        img, mask, box = _objects_sample(cfg, split, cls, i)
        _save_png(img, img_root / path, "RGB")
        _save_png(mask.astype(np.uint8) * 255, img_root / mpath, "L")
        m = meta[split]
        m["ids"].append(path)
        m["labels"].append(f"{path},{cls}")
        m["sizes"].append(f"{path},{img.shape[1]},{img.shape[0]}")
        m["boxes"].append(f"{path},{box[0]},{box[1]},{box[2]},{box[3]}")
        m["masks"].append(f"{path},{mpath},")
    _write_meta(meta_root, meta, {"localization.txt": "boxes", "localization_masks.txt": "masks"})
    _finish(img_root, name, cfg)


def generate_tissue(root: Path, cfg: Optional[SynthTissueConfig] = None) -> None:
    """Write ``synth-tissue`` (or, with a `SynthTissueShiftedConfig`, ``synth-tissue-shifted``)
    under ``root`` (see the module docstring for the layout)."""
    cfg = cfg or SynthTissueConfig()
    cfg.validate()
    name = cfg.name
    img_root, meta_root = _prepare_dirs(root, name)
    meta = {s: {"ids": [], "labels": [], "sizes": [], "masks": []} for s in SPLITS}
    for split, cls, i in tqdm(_jobs(cfg), desc=name, unit="img", leave=False):
        path = _image_path(cfg, split, cls, i)
        img, mask = _tissue_sample(cfg, cls, split, i)
        _save_png(img, img_root / path, "RGB")
        if mask is not None:
            mpath = path[:-4] + "_mask.png"
            _save_png(mask.astype(np.uint8) * 255, img_root / mpath, "L")
        else:
            mpath = ""
        m = meta[split]
        m["ids"].append(path)
        m["labels"].append(f"{path},{cls}")
        m["sizes"].append(f"{path},{img.shape[1]},{img.shape[0]}")
        m["masks"].append(f"{path},{mpath},")
    _write_meta(meta_root, meta, {"localization.txt": "masks"})
    _finish(img_root, name, cfg)


GENERATORS: Dict[str, Tuple[type, Callable]] = {
    "synth-objects": (SynthObjectsConfig, generate_objects),
    "synth-tissue": (SynthTissueConfig, generate_tissue),
    "synth-tissue-shifted": (SynthTissueShiftedConfig, generate_tissue),
}


def prepare(name: str, root: Path, cfg=None, force: bool = False) -> Path:
    """Make sure dataset ``name`` exists under ``root`` for config ``cfg`` (default config if
    None); regenerate when GENERATOR.json is missing (never generated or interrupted) or
    records a different config/generator version, or when ``force``. Returns ``root``."""
    if name not in GENERATORS:
        raise KeyError(f"unknown synthetic dataset {name!r}; known: {sorted(GENERATORS)}")
    cfg_cls, gen = GENERATORS[name]
    cfg = cfg if cfg is not None else cfg_cls()
    if not isinstance(cfg, cfg_cls):
        raise TypeError(f"{name} needs a {cfg_cls.__name__}, got {type(cfg).__name__}")
    root = Path(root)
    marker = root / name / "GENERATOR.json"
    want = config_dict(name, cfg)
    if not force and marker.exists():
        try:
            if json.loads(marker.read_text()) == want:
                return root
        except (OSError, ValueError):
            pass
    log.info("generating %s under %s", name, root)
    t0 = time.perf_counter()
    gen(root, cfg)
    log.info("generated %s in %.1f s", name, time.perf_counter() - t0)
    return root


# ------------------------------------------------------------------ contact sheet
