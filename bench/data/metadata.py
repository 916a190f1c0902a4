"""Reader of the field's metadata format (docs/protocol.md, "On-disk format").

A split is a folder with image_ids.txt, class_labels.txt, image_sizes.txt and
localization.txt; paths in them are relative to the image root. Every problem is reported
as a `MetadataError` naming the file and, where there is one, the line."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

BOX_FILE = "localization.txt"


class MetadataError(ValueError):
    """A malformed or inconsistent metadata file or image (the message names where)."""


@dataclass
class ImageRecord:
    path: str  # relative to the image root, POSIX separators
    label: int
    size: tuple[int, int] | None = None  # (width, height) from image_sizes.txt
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # inclusive x0,y0,x1,y1
    masks: list[str] = field(default_factory=list)  # instance mask paths (relative)
    ignore: str | None = None  # ignore-mask path (relative)
    has_roi_line: bool = False  # a localization line exists for this image


def read_lines(path: Path, required: bool = True, fail=None):
    """(line number, stripped text) of every non-blank line of a metadata file. A line that is
    not UTF-8 is reported as `file:line` through `fail` (then skipped) or raised."""
    if not path.is_file():
        if path.exists():
            raise MetadataError(f"{path}: metadata file is not a regular file")
        if required:
            raise MetadataError(f"{path}: metadata file is missing")
        return []
    out = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                message = (f"{path}:{number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                           f"{err.start + 1}); metadata files are UTF-8")
                if fail is None:
                    raise MetadataError(message) from None
                fail(message)
                continue
            if text:
                out.append((number, text))
    return out


def check_relative(rel: str, where: str) -> str:
    if "\x00" in rel:
        raise MetadataError(f"{where}: path {rel!r} contains a NUL byte")
    p = PurePosixPath(rel.replace("\\", "/"))
    if not rel or p.is_absolute() or ".." in p.parts:
        raise MetadataError(f"{where}: path {rel!r} must be relative to the image root and stay inside it")
    return str(p)


def split_fields(text: str, count: int, what: str, where: str) -> list[str]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != count:
        raise MetadataError(f"{where}: expected `{what}` ({count} comma-separated fields), got {text!r}")
    return parts


def parse_int(value: str, name: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        try:
            as_float = float(value)
        except ValueError:
            raise MetadataError(f"{where}: {name} {value!r} is not a number") from None
        if as_float != int(as_float):
            raise MetadataError(f"{where}: {name} {value!r} is not an integer")
        return int(as_float)


def read_split(meta_dir: Path, annotation: str, loc_file: str = BOX_FILE,
               problems: list[str] | None = None) -> list[ImageRecord]:
    """Read one split folder. `annotation` is "box", "mask" or "none" (labels only);
    `loc_file` names the localization file to read (default localization.txt).

    With `problems` (a list), every problem is appended to it and the offending line is
    skipped instead of raising at the first one (used by `bench data check`)."""
    meta_dir = Path(meta_dir)

    def fail(message: str) -> None:
        if problems is None:
            raise MetadataError(message)
        problems.append(message)

    def lines(path: Path, required: bool = True):
        try:
            return read_lines(path, required, fail if problems is not None else None)
        except MetadataError as err:
            fail(str(err))
            return []

    ids_file = meta_dir / "image_ids.txt"
    records: dict[str, ImageRecord] = {}
    order: list[str] = []
    for number, text in lines(ids_file):
        try:
            rel = check_relative(text, f"{ids_file}:{number}")
        except MetadataError as err:
            fail(str(err))
            continue
        if rel in records:
            fail(f"{ids_file}:{number}: image id {rel!r} listed twice")
            continue
        records[rel] = ImageRecord(path=rel, label=-1)
        order.append(rel)
    if not order:
        fail(f"{ids_file}: the split is empty (no image ids)")
        return []

    labels_file = meta_dir / "class_labels.txt"
    for number, text in lines(labels_file):
        where = f"{labels_file}:{number}"
        try:
            rel, label = split_fields(text, 2, "<path>,<int class id>", where)
            rec = _known(records, check_relative(rel, where), where, ids_file)
            value = parse_int(label, "class id", where)
            if value < 0:
                raise MetadataError(f"{where}: class id {value} is negative")
            rec.label = value
        except MetadataError as err:
            fail(str(err))
    for rel in order:
        if records[rel].label < 0:
            fail(f"{labels_file}: image id {rel!r} (from {ids_file.name}) has no class label")

    sizes_file = meta_dir / "image_sizes.txt"
    for number, text in lines(sizes_file, required=annotation != "mask"):
        where = f"{sizes_file}:{number}"
        try:
            rel, width, height = split_fields(text, 3, "<path>,<width>,<height>", where)
            rec = _known(records, check_relative(rel, where), where, ids_file)
            size = (parse_int(width, "width", where), parse_int(height, "height", where))
            if size[0] <= 0 or size[1] <= 0:
                raise MetadataError(f"{where}: image size {size} must be positive")
            rec.size = size
        except MetadataError as err:
            fail(str(err))

    if annotation != "none":
        loc_path = meta_dir / loc_file
        loc_lines = lines(loc_path)
        for number, text in loc_lines:
            where = f"{loc_path}:{number}"
            try:
                if annotation == "box":
                    rel, *coords = split_fields(text, 5, "<path>,x0,y0,x1,y1", where)
                    rec = _known(records, check_relative(rel, where), where, ids_file)
                    x0, y0, x1, y1 = (parse_int(c, n, where) for c, n in zip(coords, ("x0", "y0", "x1", "y1")))
                    if x1 < x0 or y1 < y0:
                        raise MetadataError(f"{where}: box ({x0},{y0},{x1},{y1}) has x1 < x0 or y1 < y0")
                    if rec.size is not None:
                        w, h = rec.size
                        if x0 < 0 or y0 < 0 or x1 >= w or y1 >= h:
                            raise MetadataError(f"{where}: box ({x0},{y0},{x1},{y1}) lies outside the "
                                                f"{w}x{h} image {rel!r}")
                    rec.boxes.append((x0, y0, x1, y1))
                else:
                    rel, mask, ignore = split_fields(text, 3, "<path>,<mask.png>,<ignore.png>", where)
                    rec = _known(records, check_relative(rel, where), where, ids_file)
                    mask = check_relative(mask, where) if mask else ""
                    ignore = check_relative(ignore, where) if ignore else ""
                    if ignore and rec.ignore is not None:
                        raise MetadataError(f"{where}: a second ignore mask for {rel!r}; only the "
                                            f"first line of an image carries one")
                    rec.has_roi_line = True
                    if mask:
                        rec.masks.append(mask)
                    if ignore:
                        rec.ignore = ignore
            except MetadataError as err:
                fail(str(err))
        if loc_lines or loc_path.is_file():
            for rel in order:
                rec = records[rel]
                if annotation == "box" and not rec.boxes:
                    fail(f"{loc_path}: image id {rel!r} has no box")
                if annotation == "mask" and not rec.has_roi_line:
                    fail(f"{loc_path}: image id {rel!r} has no mask line (an empty mask "
                         f"field marks an image without ROI)")
    return [records[rel] for rel in order]


def _known(records, rel, where, ids_file):
    try:
        return records[rel]
    except KeyError:
        raise MetadataError(f"{where}: image id {rel!r} is not listed in {ids_file}") from None


def write_split(meta_dir: Path, records: list[ImageRecord], annotation: str, loc_file: str = BOX_FILE) -> None:
    """Write records in the metadata format (used by fixtures and converters)."""
    meta_dir = Path(meta_dir)
    meta_dir.mkdir(parents=True, exist_ok=True)
    (meta_dir / "image_ids.txt").write_text("".join(f"{r.path}\n" for r in records))
    (meta_dir / "class_labels.txt").write_text("".join(f"{r.path},{r.label}\n" for r in records))
    (meta_dir / "image_sizes.txt").write_text(
        "".join(f"{r.path},{r.size[0]},{r.size[1]}\n" for r in records if r.size is not None))
    lines = []
    for r in records:
        if annotation == "box":
            lines += [f"{r.path},{x0},{y0},{x1},{y1}\n" for x0, y0, x1, y1 in r.boxes]
        elif annotation == "mask":
            masks = r.masks or [""]
            lines += [f"{r.path},{m},{(r.ignore or '') if i == 0 else ''}\n" for i, m in enumerate(masks)]
    if annotation != "none":
        (meta_dir / loc_file).write_text("".join(lines))
