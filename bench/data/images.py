"""Opening the image and mask files a dataset lists, safely.

Ids in the metadata are relative to the image root. Before a file is opened its path is
resolved (symlinks followed) and must stay inside the resolved image root: a symlink that
leaves the root is refused, as `..` and absolute ids already are. Only regular files are
opened, checked before the open, so a FIFO or a device named as an image never blocks a
run or `data check`. Images of more pixels than Pillow's limit (`PIL.Image.MAX_IMAGE_PIXELS`,
about 89 megapixels by default) are refused as possible decompression bombs. Every refusal
and every decoding error is an `ImageFileError` naming the file."""
from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from PIL import Image

from bench.data.metadata import MetadataError


class ImageFileError(MetadataError):
    """An image or mask that cannot be used; `reason` says why, the message names the file."""

    def __init__(self, path, what: str, reason: str):
        self.path, self.what, self.reason = str(path), what, reason
        super().__init__(f"{path}: {what} {reason}")


def checked_path(path: Path, root: Path | None = None, what: str = "image") -> Path:
    """`path` resolved, after checking it names a regular file inside `root` (when given)."""
    text = os.fspath(path)
    if "\x00" in text:
        raise ImageFileError(repr(text), what, "path contains a NUL byte")
    resolved = Path(os.path.realpath(text))
    if root is not None:
        top = Path(os.path.realpath(os.fspath(root)))
        if resolved != top and top not in resolved.parents:
            raise ImageFileError(path, what, f"resolves to {resolved}, outside the image root {top} "
                                             f"(symlinks leaving the data root are refused)")
    try:
        mode = os.stat(resolved).st_mode
    except FileNotFoundError:
        raise ImageFileError(path, what, "file is missing") from None
    except OSError as err:
        raise ImageFileError(path, what, f"cannot be read ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise ImageFileError(path, what, f"is {kind}, not an image file")
    return resolved


def with_image(path: Path, root: Path | None, what: str, use):
    """`use(img)` on the opened image, every Pillow error turned into an `ImageFileError`."""
    resolved = checked_path(path, root, what)
    try:
        with warnings.catch_warnings():
            # above MAX_IMAGE_PIXELS Pillow only warns (and raises above twice that): refuse both
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(resolved) as img:
                return use(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageFileError(path, what, f"is refused: {err}") from None
    except Exception as err:  # Pillow raises OSError, ValueError, SyntaxError, EOFError... on bad files
        raise ImageFileError(path, what, f"cannot be read ({type(err).__name__}: {err})") from None


def read_image(path: Path, root: Path | None = None, mode: str | None = None, what: str = "image") -> Image.Image:
    """The decoded image at `path` (checked as `checked_path` does), converted to `mode` when
    given. Raises `ImageFileError` for every problem, naming the file."""
    def decode(img):
        img.load()
        return img.convert(mode) if mode is not None else img.copy()

    return with_image(path, root, what, decode)


def image_size(path: Path, root: Path | None = None, decode: bool = False, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image file: from its header, or after decoding it all (`decode`)."""
    def size(img):
        if decode:
            img.load()
        return img.size

    return with_image(path, root, what, size)
