"""Small per-cell artifacts for the visual report, kept out of the result JSON.

Beside `seed<k>.json` the runner writes `seed<k>.npz` (compressed, a few tens of KB):
- `cams`: uint8 [K, S, S], the method's normalised score maps of K fixed test images at the
  thumbnail size S (the same K images for every method of a dataset configuration), quantised
  to CAM_LEVELS grey levels (a picture, not data to compute metrics from),
- `sample_index`: their indices in the test split,
- `curve.<kind>.<name>`: the evaluator's threshold curves (`box`: accuracy against tau per
  IoU threshold, `mask`: precision / recall, any other kind as the evaluator returns it), on
  at most CURVE_POINTS evenly spaced thresholds: for plots; the entry's metrics are computed
  on the full curves.

The K images themselves are stored once per dataset configuration in
`<results>/<dataset>/samples-<hash>.npz` (images uint8 [K, S, S, 3], labels, ground-truth
boxes in thumbnail pixels as rows (sample, x0, y0, x1, y1), masks uint8 [K, S, S] with 255 =
ignore). Loading never unpickles (`allow_pickle=False`).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import config_hash, to_jsonable
from bench.io import atomic_write_bytes

NUM_SAMPLES = 4
THUMB = 64  # largest thumbnail side in pixels (smaller evaluation sizes are kept as they are)
CAM_LEVELS = 32  # stored CAMs are quantised to this many grey levels (they compress ~4x better)
CURVE_POINTS = 256  # curves are stored on at most this many of their thresholds (plots only)


def sample_indices(n: int, k: int = NUM_SAMPLES) -> list[int]:
    """K indices spread over a split of n items (first, ..., towards the end), so that a split
    ordered by class shows several classes."""
    if n <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, n - 1, num=min(k, n)).round()})


def thumb_size(eval_size: int) -> int:
    return min(THUMB, eval_size)


def _thumb(x: torch.Tensor, mode: str, side: int) -> torch.Tensor:
    """[N, C, h, w] -> [N, C, side, side]."""
    if mode == "nearest":
        return F.interpolate(x.float(), size=(side, side), mode="nearest")
    return F.interpolate(x.float(), size=(side, side), mode="bilinear", align_corners=False)


@dataclass
class SampleCollector:
    """Collects, during evaluation, the maps (and images, ground truth) of the chosen items."""

    indices: list[int]
    cams: dict[int, np.ndarray] = field(default_factory=dict)
    images: dict[int, np.ndarray] = field(default_factory=dict)
    labels: dict[int, int] = field(default_factory=dict)
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    masks: dict[int, np.ndarray] = field(default_factory=dict)

    def accumulate(self, batch: dict, maps: torch.Tensor) -> None:
        """`maps` [B, E, E] normalised to [0, 1] at the evaluation size E."""
        wanted = set(self.indices)
        for row, index in enumerate(batch["index"].tolist()):
            if index not in wanted:
                continue
            size = maps.shape[-1]
            side = thumb_size(size)
            cam = _thumb(maps[row][None, None], "bilinear", side)[0, 0]
            step = 256 // CAM_LEVELS
            self.cams[index] = ((cam.clamp(0, 1) * 255).round().to(torch.uint8) // step * step).numpy()
            image = _thumb(batch["image"][row][None].cpu(), "bilinear", side)[0]
            self.images[index] = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            self.labels[index] = int(batch["label"][row])
            if "boxes" in batch:
                b = batch["boxes"][row].float().reshape(-1, 4) * (side / size)
                self.boxes[index] = b.numpy().astype(np.float32)
            if "mask" in batch:
                m = _thumb(batch["mask"][row][None, None].cpu(), "nearest", side)[0, 0]
                self.masks[index] = m.to(torch.uint8).numpy()

    def complete(self) -> bool:
        return bool(self.indices) and all(i in self.cams for i in self.indices)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def curve_arrays(curves: dict) -> dict[str, np.ndarray]:
    """Flatten {kind: {name: 1-D array}} into npz keys `curve.<kind>.<name>` (float32)."""
    out = {}
    for kind, series in (curves or {}).items():
        if not isinstance(series, dict):
            continue
        for name, values in series.items():
            arr = np.asarray(values.numpy() if isinstance(values, torch.Tensor) else values)
            if arr.ndim == 1 and arr.size and np.issubdtype(arr.dtype, np.number):
                keep = np.unique(np.linspace(0, arr.size - 1, num=min(arr.size, CURVE_POINTS)).round().astype(int))
                out[f"curve.{kind}.{name}"] = arr[keep].astype(np.float32)
    return out


def samples_name(dataset) -> str:
    return f"samples-{config_hash({'dataset': dataset.name, 'config': to_jsonable(dataset.cfg), 'thumb': THUMB})}.npz"


def write_artifacts(cell_json: Path, dataset, collector: SampleCollector | None, curves: dict) -> dict:
    """Write `<cell>.npz` (and the dataset's samples file when absent); returns the entry's
    `artifacts` field (file name, sha256, samples file name)."""
    arrays = curve_arrays(curves)
    samples = None
    if collector is not None and collector.complete():
        order = collector.indices
        arrays["cams"] = np.stack([collector.cams[i] for i in order])
        arrays["sample_index"] = np.asarray(order, dtype=np.int64)
        samples = samples_name(dataset)
        samples_path = cell_json.parent.parent / samples
        if not samples_path.is_file():
            shared = {"images": np.stack([collector.images[i] for i in order]),
                      "labels": np.asarray([collector.labels[i] for i in order], dtype=np.int64),
                      "sample_index": np.asarray(order, dtype=np.int64)}
            if collector.boxes:
                shared["boxes"] = np.concatenate(
                    [np.concatenate([np.full((len(collector.boxes[i]), 1), k, np.float32), collector.boxes[i]], 1)
                     for k, i in enumerate(order)]).astype(np.float32).reshape(-1, 5)
            if collector.masks:
                shared["masks"] = np.stack([collector.masks[i] for i in order])
            atomic_write_bytes(samples_path, _npz_bytes(shared))
    data = _npz_bytes(arrays)
    path = cell_json.with_suffix(".npz")
    atomic_write_bytes(path, data)
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "samples": samples}


class ArtifactError(ValueError):
    """An artifact file that cannot be loaded (the message names it and says why)."""


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an artifact file; never unpickles: a file holding object (pickled) arrays
    is refused with an `ArtifactError` naming it, as is one that is not a readable .npz."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ArtifactError(f"{path}: not an .npz archive (a single .npy array)")
            return {k: data[k] for k in data.files}
    except ArtifactError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ArtifactError(f"{path}: holds pickled (object) arrays, refused: artifacts are loaded "
                                f"without unpickling") from None
        raise ArtifactError(f"{path}: not a readable .npz archive ({err})") from None
    except Exception as err:  # zipfile.BadZipFile, OSError, EOFError from a damaged file
        raise ArtifactError(f"{path}: not a readable .npz archive ({type(err).__name__}: {err})") from None


def curves_of(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith("curve."):
            _, kind, name = key.split(".", 2)
            out.setdefault(kind, {})[name] = value
    return out
