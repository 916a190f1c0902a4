"""The YouTube-Objects video layout on disk (docs/protocol.md, "On-disk format"): its reader.
The frame datasets, the shot sampler and the `VideoDataset` plugin base are in
`bench.dataset.video`.

On disk: frames under `<frame root>/<class>/<video>/<shot>/<frame>` (any depth: a frame's
shot is its parent folder) and, per split, `<root>/metadata/<meta name>/<split>/`:

- train (weak labels): `image_ids.txt` lists shot folders, `class_labels.txt` has
  `<shot>,<class id>`; the frames of a shot are the image files found in its folder.
- val / test: `image_ids.txt` lists frames, `class_labels.txt` `<frame>,<class id>`,
  `image_sizes.txt` `<frame>,<width>,<height>` (optional), `localization.txt`
  `<frame>,x0,y0,x1,y1`, one line per box, a frame may repeat. Coordinates may be fractional
  (YTOv1) and may reach the image's width/height (YTOv2.2 counts from 1): boxes are clipped
  to the image; a box with x1 < x0 or y1 < y0 is an error.
- optional `subsets.txt`: `<shot>,<subset name>` (e.g. the motion regime of synth-video);
  CorLoc is also reported per subset.

A frame listed in image_ids.txt without any box line carries no ground truth: it is skipped
(CorLoc is computed over annotated frames only) and the number skipped is logged. A missing
`localization.txt` is an error naming the file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


from bench.data.metadata import ImageRecord, MetadataError, check_relative, parse_int, read_lines, split_fields

log = logging.getLogger(__name__)

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
NO_SUBSET = -1

__all__ = ["Shot", "VideoSplit", "read_video_split", "FRAME_SUFFIXES", "NO_SUBSET"]


@dataclass
class Shot:
    path: str  # shot folder, relative to the frame root
    label: int
    frames: list[ImageRecord] = field(default_factory=list)  # in temporal (file name) order
    subset: str | None = None


@dataclass
class VideoSplit:
    shots: list[Shot]
    skipped_frames: list[str] = field(default_factory=list)  # listed frames without boxes


def _float(value: str, name: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise MetadataError(f"{where}: {name} {value!r} is not a number") from None


def _read_labels(meta_dir: Path, ids: list[str], fail) -> dict[str, int]:
    labels_file = meta_dir / "class_labels.txt"
    labels: dict[str, int] = {}
    known = set(ids)
    for number, text in read_lines(labels_file, fail=fail):
        where = f"{labels_file}:{number}"
        try:
            rel, value = split_fields(text, 2, "<path>,<int class id>", where)
            rel = check_relative(rel, where)
            if rel not in known:
                raise MetadataError(f"{where}: id {rel!r} is not listed in {meta_dir / 'image_ids.txt'}")
            label = parse_int(value, "class id", where)
            if label < 0:
                raise MetadataError(f"{where}: class id {label} is negative")
            labels[rel] = label
        except MetadataError as err:
            fail(str(err))
    for rel in ids:
        if rel not in labels:
            fail(f"{labels_file}: id {rel!r} (from image_ids.txt) has no class label")
    return labels


def _read_ids(meta_dir: Path, fail) -> list[str]:
    ids_file = meta_dir / "image_ids.txt"
    ids: list[str] = []
    seen: set[str] = set()
    for number, text in read_lines(ids_file, fail=fail):
        where = f"{ids_file}:{number}"
        try:
            rel = check_relative(text, where)
        except MetadataError as err:
            fail(str(err))
            continue
        if rel in seen:
            fail(f"{where}: id {rel!r} listed twice")
            continue
        seen.add(rel)
        ids.append(rel)
    if not ids:
        fail(f"{ids_file}: the split is empty (no ids)")
    return ids


def _read_subsets(meta_dir: Path, fail) -> dict[str, str]:
    path = meta_dir / "subsets.txt"
    out: dict[str, str] = {}
    for number, text in read_lines(path, required=False, fail=fail):
        where = f"{path}:{number}"
        try:
            rel, name = split_fields(text, 2, "<shot>,<subset name>", where)
            out[check_relative(rel, where)] = name
        except MetadataError as err:
            fail(str(err))
    return out


def read_video_split(meta_dir: Path, frame_root: Path, kind: str, problems: list[str] | None = None) -> VideoSplit:
    """Read one split folder. `kind` is "shots" (train: image_ids.txt lists shot folders whose
    frames are listed from disk) or "frames" (val/test: annotated frames with boxes).
    With `problems` (a list) every problem is collected instead of raising at the first."""
    if kind not in ("shots", "frames"):
        raise ValueError(f"read_video_split: kind must be 'shots' or 'frames', got {kind!r}")
    meta_dir, frame_root = Path(meta_dir), Path(frame_root)

    def fail(message: str) -> None:
        if problems is None:
            raise MetadataError(message)
        problems.append(message)

    ids = _read_ids(meta_dir, fail)
    labels = _read_labels(meta_dir, ids, fail)
    subsets = _read_subsets(meta_dir, fail)
    if kind == "shots":
        shots = []
        for rel in ids:
            folder = frame_root / rel
            frames = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES) \
                if folder.is_dir() else []
            if not frames:
                fail(f"{folder}: shot folder (listed in {meta_dir / 'image_ids.txt'}) is missing or holds no frames")
                continue
            label = labels.get(rel, -1)
            shots.append(Shot(rel, label, [ImageRecord(f"{rel}/{f}", label) for f in frames], subsets.get(rel)))
        return VideoSplit(shots)

    records = {rel: ImageRecord(rel, labels.get(rel, -1)) for rel in ids}
    sizes_file = meta_dir / "image_sizes.txt"
    for number, text in read_lines(sizes_file, required=False, fail=fail):
        where = f"{sizes_file}:{number}"
        try:
            rel, width, height = split_fields(text, 3, "<path>,<width>,<height>", where)
            rec = records.get(check_relative(rel, where))
            if rec is None:
                raise MetadataError(f"{where}: frame {rel!r} is not listed in {meta_dir / 'image_ids.txt'}")
            rec.size = (parse_int(width, "width", where), parse_int(height, "height", where))
            if min(rec.size) <= 0:
                raise MetadataError(f"{where}: image size {rec.size} must be positive")
        except MetadataError as err:
            fail(str(err))
    loc_file = meta_dir / "localization.txt"
    try:
        loc_lines = read_lines(loc_file, fail=fail)
    except MetadataError as err:
        fail(str(err))
        loc_lines = []
    for number, text in loc_lines:
        where = f"{loc_file}:{number}"
        try:
            rel, *coords = split_fields(text, 5, "<path>,x0,y0,x1,y1", where)
            rec = records.get(check_relative(rel, where))
            if rec is None:
                raise MetadataError(f"{where}: frame {rel!r} is not listed in {meta_dir / 'image_ids.txt'}")
            x0, y0, x1, y1 = (_float(c, n, where) for c, n in zip(coords, ("x0", "y0", "x1", "y1")))
            if x1 < x0 or y1 < y0 or min(x0, y0) < 0:
                raise MetadataError(f"{where}: box ({x0:g},{y0:g},{x1:g},{y1:g}) needs 0 <= x0 <= x1 and 0 <= y0 <= y1")
            rec.boxes.append((x0, y0, x1, y1))
        except MetadataError as err:
            fail(str(err))
    by_shot: dict[str, Shot] = {}
    skipped = []
    for rel in ids:
        rec = records[rel]
        if not rec.boxes:
            skipped.append(rel)
            continue
        shot = str(PurePosixPath(rel).parent)
        if shot not in by_shot:
            by_shot[shot] = Shot(shot, rec.label, [], subsets.get(shot))
        elif by_shot[shot].label != rec.label:
            fail(f"{meta_dir / 'class_labels.txt'}: frame {rel!r} has class {rec.label}, other frames of its "
                 f"shot {shot!r} have class {by_shot[shot].label}")
        by_shot[shot].frames.append(rec)
    if skipped:
        log.info("%s: %d listed frames have no box and are skipped (CorLoc counts annotated frames only); "
                 "first: %s", loc_file, len(skipped), skipped[0])
    for shot in by_shot.values():
        shot.frames.sort(key=lambda r: r.path)
    return VideoSplit(list(by_shot.values()), skipped)
