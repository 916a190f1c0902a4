"""`python -m bench data check`: validate a dataset's on-disk layout before a long run.

Every split folder the dataset reads is parsed leniently (all malformed lines and ids present
in one file but not another are collected, with file and line), then every image is opened
(header only unless `decode=True`), boxes are checked against the real image size, masks are
opened and compared with their image's size (a warning: the loader, like the reference
evaluator, resizes each to the evaluation frame on its own), and the split sizes are compared with the
published ones (a warning only: subsets are legitimate). Images are opened as
`bench.data.images` does for a run: regular files inside the resolved image root only (a
symlink leaving it or a FIFO is an error, never followed or waited on), decompression bombs
refused; a line that is not UTF-8 is an error with its file:line and the check goes on."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.data.images import ImageFileError, image_size
from bench.data.metadata import MetadataError, read_split


@dataclass
class CheckReport:
    dataset: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # split folder -> images listed

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self, max_lines: int = 50) -> str:
        counts = ", ".join(f"{split} {n} images" for split, n in self.counts.items())
        out = [f"data check {self.dataset}" + (f": {counts}" if counts else "")]
        for kind, items in (("ERROR", self.errors), ("WARNING", self.warnings)):
            for text in items[:max_lines]:
                out.append(f"{kind} {text}")
            if len(items) > max_lines:
                out.append(f"{kind} ... and {len(items) - max_lines} more")
        out.append(f"{len(self.errors)} errors, {len(self.warnings)} warnings: "
                   + ("OK" if self.ok else "FIX THE ERRORS BEFORE A RUN"))
        return "\n".join(out)


def _open_size(path: Path, decode: bool, root: Path | None = None) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) of an image or mask, or (None, why it cannot be used): missing, not a
    regular file, leaving `root` through a symlink, too many pixels, or unreadable."""
    try:
        return image_size(path, root, decode=decode), None
    except ImageFileError as err:
        return None, err.reason


def _loc_lines(path: Path) -> dict[str, list[int]]:
    """Image id -> line numbers of `path` (to point at the line of a bad box or mask); lines
    that are not UTF-8 were reported by `read_split` and match no id here."""
    out: dict[str, list[int]] = {}
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                rel = raw.decode("utf-8", errors="replace").split(",", 1)[0].strip().replace("\\", "/")
                if rel:
                    out.setdefault(rel, []).append(number)
    except OSError:
        pass
    return out


def _in_range(count: int, expected) -> bool:
    if isinstance(expected, (tuple, list)):
        return expected[0] <= count <= expected[1]
    return count == expected


def check_dataset(dataset, data_root: Path, decode: bool = False, progress: bool = False) -> CheckReport:
    """Validate every split folder of a `MetadataDataset` under `data_root` (a dataset with
    another layout brings its own `check`, e.g. the video datasets)."""
    own = getattr(dataset, "check", None)
    if own is not None:
        return own(data_root, decode=decode, progress=progress)
    report = CheckReport(dataset.name)
    why = dataset.missing(data_root)
    if why is not None:
        report.errors.append(why)
        return report
    root = dataset.image_root(data_root)
    if not root.is_dir():
        report.errors.append(f"{root}: image folder is missing")
    splits = dataset.check_splits()
    meta_for = {dataset.split_names[s]: s for s in ("train", "val", "test")}
    for folder, annotation in splits.items():
        meta_dir = dataset.meta_dir(data_root, meta_for.get(folder, folder))
        if not meta_dir.is_dir():
            report.errors.append(f"{meta_dir}: split folder is missing")
            continue
        problems: list[str] = []
        records = read_split(meta_dir, annotation, dataset.loc_file, problems=problems)
        report.errors.extend(problems)
        if dataset.extra_mask_file and annotation != "none":
            extra: list[str] = []
            masks = {r.path: r for r in read_split(meta_dir, "mask", dataset.extra_mask_file, problems=extra)}
            report.errors.extend(extra)
            for r in records:
                if r.path in masks:
                    r.masks, r.ignore = masks[r.path].masks, masks[r.path].ignore
        report.counts[folder] = len(records)
        labels_file = meta_dir / "class_labels.txt"
        for r in records:
            if r.label >= dataset.num_classes:
                report.errors.append(f"{labels_file}: class id {r.label} of {r.path!r} is not below the "
                                     f"{dataset.num_classes} classes of {dataset.name}")
        sized = [r for r in records if r.size is not None]
        if sized and len(sized) < len(records):
            absent = [r.path for r in records if r.size is None]
            report.errors.append(f"{meta_dir / 'image_sizes.txt'}: {len(absent)} image ids have no size line "
                                 f"(first: {absent[0]!r})")
        loc_path = meta_dir / dataset.loc_file
        loc_lines = _loc_lines(loc_path) if annotation != "none" else {}
        iterator = records
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(records, desc=f"{dataset.name}/{folder}", unit="img", dynamic_ncols=True)
        for r in iterator:
            _check_record(report, dataset, root, r, annotation, loc_path, loc_lines.get(r.path, []), decode)
        expected = dataset.published_counts.get(folder)
        if expected is not None and not _in_range(len(records), expected):
            shown = f"{expected[0]}..{expected[1]}" if isinstance(expected, (tuple, list)) else f"{expected}"
            report.warnings.append(f"{meta_dir}: {len(records)} images, the published {dataset.name} {folder} "
                                   f"split has {shown}")
    return report


def _check_record(report, dataset, root: Path, r, annotation: str, loc_path: Path, lines: list[int],
                  decode: bool) -> None:
    size, why = _open_size(root / r.path, decode, root)
    if size is None:
        report.errors.append(f"{root / r.path}: image {why}")
        return
    where = f"{loc_path}:{lines[0]}" if lines else str(loc_path)
    if r.size is not None and r.size != size:
        report.errors.append(f"{root / r.path}: image is {size[0]}x{size[1]} but image_sizes.txt says "
                             f"{r.size[0]}x{r.size[1]}")
    if annotation == "box" and r.size is None:  # read_split checked boxes against image_sizes.txt
        w, h = size
        for i, (x0, y0, x1, y1) in enumerate(r.boxes):
            if x0 < 0 or y0 < 0 or x1 >= w or y1 >= h:
                at = f"{loc_path}:{lines[i]}" if i < len(lines) else where
                report.errors.append(f"{at}: box ({x0},{y0},{x1},{y1}) lies outside the {w}x{h} image {r.path!r}")
    for i, mask in enumerate([*r.masks, *([r.ignore] if r.ignore else [])]):
        at = f"{loc_path}:{lines[i]}" if i < len(r.masks) and i < len(lines) else where
        kind = "mask" if i < len(r.masks) else "ignore mask"
        msize, why = _open_size(root / mask, decode, root)
        if msize is None:
            report.errors.append(f"{at}: {kind} {root / mask} {why}")
        elif msize != size:
            # a warning: the loader, like the reference evaluator, resizes image and mask to the
            # evaluation frame separately, so the run goes on; it is usually a wrong file
            report.warnings.append(f"{at}: {kind} {root / mask} is {msize[0]}x{msize[1]}, its image "
                                   f"{r.path!r} is {size[0]}x{size[1]} (each is resized to the evaluation "
                                   f"frame on its own, as the reference evaluator does)")


__all__ = ["CheckReport", "check_dataset", "MetadataError"]
