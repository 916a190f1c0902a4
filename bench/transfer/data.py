"""The target's training images as an adaptation may see them: images and item indices only.

`UnlabelledView` wraps a split; reading a label, mask or box (from an item or from the split)
raises `LabelAccessError`, so a source-free adaptation cannot use the target's annotation even
by mistake. `ReadGuard` wraps the source's training split: once sealed (after the source
model is built), any read raises `SourceAccessError`: adaptation never sees source data."""
from __future__ import annotations

import torch

ANNOTATION_KEYS = frozenset({"label", "mask", "boxes"})


class LabelAccessError(RuntimeError):
    """An adaptation read an annotation of the target's training split."""


class SourceAccessError(RuntimeError):
    """The source's training data was read after the source model was built."""


class UnlabelledItem(dict):
    """One item: `image` and `index`; asking for an annotation raises."""

    def __getitem__(self, key):
        if key in ANNOTATION_KEYS:
            raise LabelAccessError(f"target training item: {key!r} is not available to a source-free adaptation")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key in ANNOTATION_KEYS:
            raise LabelAccessError(f"target training item: {key!r} is not available to a source-free adaptation")
        return super().get(key, default)


class UnlabelledView(torch.utils.data.Dataset):
    """The images of `split` without their labels (see the module doc). Only `len`, item
    reads and `reads` (how many items were read, for the tests) are exposed."""

    def __init__(self, split):
        self._split = split
        self.reads = 0

    def __len__(self) -> int:
        return len(self._split)

    def __getitem__(self, index: int) -> UnlabelledItem:
        item = self._split[index]
        self.reads += 1
        return UnlabelledItem(image=item["image"], index=int(item["index"]))

    def __getattr__(self, name):
        # only reached for names not set in __init__: labels, records, with_masks, ...
        if name.startswith("__"):  # protocol probes (DataLoader's __getitems__, copy, pickle)
            raise AttributeError(name)
        raise LabelAccessError(f"the unlabelled target split has no attribute {name!r} (labels and annotations "
                               f"are not available to a source-free adaptation)")


def collate_unlabelled(items: list[UnlabelledItem]) -> dict:
    return {"image": torch.stack([dict.__getitem__(it, "image") for it in items]),
            "index": torch.tensor([dict.__getitem__(it, "index") for it in items], dtype=torch.long)}


class ReadGuard(torch.utils.data.Dataset):
    """A split that counts its reads and refuses every read once `seal`ed."""

    def __init__(self, split, what: str):
        self.split, self.what = split, what
        self.reads = 0
        self.sealed = False

    def seal(self) -> None:
        self.sealed = True

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        if self.sealed:
            raise SourceAccessError(f"{self.what} was read during adaptation (item {index}); a source-free "
                                    f"adaptation sees only the source model")
        self.reads += 1
        return self.split[index]

    def __getattr__(self, name):  # labels, with_masks, ... of the wrapped split (source model training reads them)
        if name.startswith("__") or name in ("split", "what", "reads", "sealed"):
            raise AttributeError(name)
        if self.sealed:
            raise SourceAccessError(f"{self.what}.{name} was read during adaptation")
        return getattr(self.split, name)
