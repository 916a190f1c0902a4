"""Video datasets in the YouTube-Objects layout: frame datasets, the shot sampler and the
`VideoDataset` plugin base (the reader of the files is `bench.data.video`)."""
from __future__ import annotations

import random as _random
from pathlib import Path

import torch

from bench.config import EmptyConfig
from bench.data.metadata import MetadataError
from bench.data.video import NO_SUBSET, Shot, VideoSplit, read_video_split
from bench.dataset.base import Dataset, Splits
from bench.dataset.metadata import MetadataImages

__all__ = ["VideoFrames", "ShotFrames", "ShotClipSampler", "clip_lengths", "VideoDataset"]


class VideoFrames(MetadataImages):
    """Every frame of a list of shots, flat and shot by shot in temporal order. Items are
    MetadataImages items plus `shot` (index of the shot in this split), `position` (frame
    index inside its shot) and `subset` (index into `subset_names`, -1 for none)."""

    def __init__(self, root: Path, shots: list[Shot], subset_names: tuple[str, ...] = (), **kwargs):
        records, shot_of, position = [], [], []
        self.shot_frames: list[list[int]] = []
        for s, shot in enumerate(shots):
            self.shot_frames.append(list(range(len(records), len(records) + len(shot.frames))))
            for p, rec in enumerate(shot.frames):
                records.append(rec)
                shot_of.append(s)
                position.append(p)
        super().__init__(root, records, **kwargs)
        self._init_args = (root, shots, subset_names, kwargs)
        self.shots = shots
        self.subset_names = tuple(subset_names)
        self.shot_ids = torch.tensor(shot_of, dtype=torch.long)  # [N] shot of every frame
        self.positions = torch.tensor(position, dtype=torch.long)
        self._subset = [self.subset_names.index(shot.subset) if shot.subset in self.subset_names else NO_SUBSET
                        for shot in shots]
        self._clipped: set[int] = set()

    def __getitem__(self, index: int) -> dict:
        if self.with_boxes and index not in self._clipped:
            # YTO boxes may be fractional or reach the width/height: clip to the frame first
            rec = self.records[index]
            _, (w, h) = self._load_pixels(index)
            rec.boxes = [(min(x0, w - 1), min(y0, h - 1), min(x1, w - 1), min(y1, h - 1)) for x0, y0, x1, y1 in rec.boxes]
            self._clipped.add(index)
        item = super().__getitem__(index)
        shot = int(self.shot_ids[index])
        item.update(shot=shot, position=int(self.positions[index]), subset=self._subset[shot])
        return item

    def without_augmentation(self) -> "VideoFrames":
        """The same frames with the random flip (and crop) switched off: for methods that pair
        frames with stored per-frame maps. Shares the decoded pixels unless the frames are
        stored for random crops (then the view decodes its own at the input size)."""
        if self.crop_from is not None:
            root, shots, subset_names, kwargs = self._init_args
            return type(self)(root, shots, subset_names, **{**kwargs, "train": False, "crop_from": None})
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.train = False
        return view


class ShotFrames(torch.utils.data.Dataset):
    """The weakly-labelled train split: item i is one random frame of shot i mod #shots
    (the protocol's one random frame per shot per epoch; `draws_per_shot` > 1 draws several
    independent frames per shot in one pass). The frames are in `self.frames`."""

    def __init__(self, frames: VideoFrames, draws_per_shot: int = 1):
        if draws_per_shot < 1:
            raise ValueError(f"ShotFrames: draws_per_shot must be >= 1, got {draws_per_shot}")
        self.frames, self.draws_per_shot = frames, draws_per_shot
        self.labels = [shot.label for shot in frames.shots] * draws_per_shot

    def __len__(self) -> int:
        return len(self.frames.shots) * self.draws_per_shot

    def __getitem__(self, index: int) -> dict:
        members = self.frames.shot_frames[index % len(self.frames.shots)]
        return self.frames[members[_random.randrange(len(members))]]  # seeded per cell by the runner


class ShotClipSampler(torch.utils.data.Sampler):
    """Batches of clips for a `VideoFrames` (use as a DataLoader `batch_sampler`).

    Per epoch every shot (in a shuffled order) gives one clip: a random anchor frame and its
    neighbours, `clip_length` consecutive frames of that shot holding the anchor (placed last
    for direction "before", first for "after", centred for "both"; a window that would cross
    the shot's first or last frame is shifted inside it, a shot shorter than the clip gives
    all its frames). A batch is `clips_per_batch` clips, frame indices clip after clip in
    temporal order; a clip never mixes shots. `clip_lengths(batch["shot"])` recovers them."""

    def __init__(self, shot_frames: list[list[int]], clip_length: int, clips_per_batch: int,
                 direction: str = "before", seed: int = 0, drop_last: bool = False):
        if clip_length < 1 or clips_per_batch < 1:
            raise ValueError(f"ShotClipSampler: clip_length and clips_per_batch must be >= 1, "
                             f"got {clip_length} and {clips_per_batch}")
        if direction not in ("before", "after", "both"):
            raise ValueError(f"ShotClipSampler: direction must be before, after or both, got {direction!r}")
        self.shot_frames = [list(s) for s in shot_frames if s]
        self.clip_length, self.clips_per_batch = clip_length, clips_per_batch
        self.direction, self.drop_last = direction, drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def clip(self, members: list[int], anchor: int) -> list[int]:
        T, L = len(members), min(self.clip_length, len(members))
        offset = {"before": L - 1, "after": 0, "both": L // 2}[self.direction]
        start = min(max(anchor - offset, 0), T - L)
        return members[start:start + L]

    def clips(self) -> list[list[int]]:
        """One epoch of clips (one per shot, shuffled)."""
        order = torch.randperm(len(self.shot_frames), generator=self.generator).tolist()
        out = []
        for s in order:
            members = self.shot_frames[s]
            anchor = int(torch.randint(len(members), (1,), generator=self.generator))
            out.append(self.clip(members, anchor))
        return out

    def __iter__(self):
        clips = self.clips()
        for i in range(0, len(clips), self.clips_per_batch):
            group = clips[i:i + self.clips_per_batch]
            if self.drop_last and len(group) < self.clips_per_batch:
                return
            yield [index for clip in group for index in clip]

    def __len__(self) -> int:
        n = len(self.shot_frames)
        return n // self.clips_per_batch if self.drop_last else -(-n // self.clips_per_batch)


def clip_lengths(shots: torch.Tensor) -> torch.Tensor:
    """Lengths of the runs of equal shot ids in a batch from `ShotClipSampler` [S]."""
    if shots.numel() == 0:
        return shots.new_zeros(0)
    return torch.unique_consecutive(shots, return_counts=True)[1]


def _balanced_shots(shots: list[Shot], limit: int | None, count) -> list[Shot]:
    """Shots taken round-robin over classes until `count(shots)` reaches `limit` (deterministic)."""
    if limit is None or count(shots) <= limit:
        return shots
    by_class: dict[int, list[Shot]] = {}
    for s in shots:
        by_class.setdefault(s.label, []).append(s)
    queues = [list(v) for _, v in sorted(by_class.items())]
    out: list[Shot] = []
    while any(queues) and count(out) < limit:
        for q in queues:
            if q and count(out) < limit:
                out.append(q.pop(0))
    return out


class VideoDataset(Dataset):
    """A video dataset in the YTO layout (module docstring): frames under
    `<data root>/<frame_dir>/`, split folders `<data root>/metadata/<meta_name>/<split>/`."""

    task = "video"
    annotation = "box"
    primary_metric = "CorLoc"
    metrics = ("CorLoc-classmean", "Top-1 Cls")
    frame_dir: str = ""  # default: the dataset name
    meta_name: str = ""  # default: the dataset name
    split_names: dict[str, str] = {"train": "train", "val": "val", "test": "test"}
    image_size: int = 224  # network input size (square) unless the budget sets one
    subsets: tuple[str, ...] = ()  # subset names CorLoc is also reported on (from subsets.txt)
    train_draws_per_shot: int = 1  # random frames per shot in one pass over the train split
    published_counts: dict[str, int] = {}  # split -> shots (train) or annotated frames (val/test)
    Config = EmptyConfig

    def frame_root(self, data_root: Path) -> Path:
        return Path(data_root) / (self.frame_dir or self.name)

    def meta_dir(self, data_root: Path, split: str) -> Path:
        return Path(data_root) / "metadata" / (self.meta_name or self.name) / self.split_names[split]

    def missing(self, data_root: Path) -> str | None:
        where = self.meta_dir(data_root, "test")
        if not (where / "image_ids.txt").is_file():
            return (f"{self.name}: not found (looked for {where}/image_ids.txt); point to it with --data-root DIR "
                    f"(DIR/metadata/{self.meta_name or self.name}/ and DIR/{self.frame_dir or self.name}/)")
        return None

    def read(self, data_root: Path, split: str) -> VideoSplit:
        out = read_video_split(self.meta_dir(data_root, split), self.frame_root(data_root),
                               "shots" if split == "train" else "frames")
        for shot in out.shots:
            if not 0 <= shot.label < self.num_classes:
                raise MetadataError(f"{self.meta_dir(data_root, split)}/class_labels.txt: class id {shot.label} of "
                                    f"{shot.path!r} is not in [0, {self.num_classes}) ({self.name})")
        return out

    def check(self, data_root: Path, decode: bool = False, progress: bool = False):
        """`bench data check` for the YTO layout: every split read leniently (all problems with
        file and line), every listed frame opened (header only unless `decode`), boxes checked
        against the frame size, split sizes compared with the published ones (a warning)."""
        from bench.data.check import CheckReport, _open_size

        report = CheckReport(self.name)
        why = self.missing(data_root)
        if why is not None:
            report.errors.append(why)
            return report
        root = self.frame_root(data_root)
        for split in ("train", "val", "test"):
            meta_dir = self.meta_dir(data_root, split)
            problems: list[str] = []
            out = read_video_split(meta_dir, root, "shots" if split == "train" else "frames", problems=problems)
            report.errors.extend(problems)
            frames = [f for shot in out.shots for f in shot.frames]
            report.counts[split] = len(out.shots) if split == "train" else len(frames)
            for shot in out.shots:
                if not 0 <= shot.label < self.num_classes:
                    report.errors.append(f"{meta_dir / 'class_labels.txt'}: class id {shot.label} of {shot.path!r} "
                                         f"is not in [0, {self.num_classes})")
            if out.skipped_frames:
                report.warnings.append(f"{meta_dir / 'localization.txt'}: {len(out.skipped_frames)} listed frames "
                                       f"have no box and are skipped (first: {out.skipped_frames[0]!r})")
            checked = frames if split != "train" else [s.frames[0] for s in out.shots]  # train: one frame a shot
            if progress:
                from tqdm.auto import tqdm

                checked = tqdm(checked, desc=f"{self.name}/{split}", unit="frame", dynamic_ncols=True)
            for rec in checked:
                size, why = _open_size(root / rec.path, decode, root)
                if size is None:
                    report.errors.append(f"{root / rec.path}: frame {why}")
                elif rec.size is not None and rec.size != size:
                    report.errors.append(f"{root / rec.path}: frame is {size[0]}x{size[1]} but image_sizes.txt "
                                         f"says {rec.size[0]}x{rec.size[1]}")
                elif any(x0 >= size[0] or y0 >= size[1] for x0, y0, _, _ in rec.boxes):
                    report.errors.append(f"{meta_dir / 'localization.txt'}: a box of {rec.path!r} starts outside "
                                         f"its {size[0]}x{size[1]} frame")
            expected = self.published_counts.get(split)
            if expected is not None and report.counts[split] != expected:
                unit = "shots" if split == "train" else "annotated frames"
                report.warnings.append(f"{meta_dir}: {report.counts[split]} {unit}, the published {self.name} "
                                       f"{split} split has {expected}")
        return report

    def splits(self, data_root: Path, budget) -> Splits:
        root = self.frame_root(data_root)
        size = budget.input_size or self.image_size
        out = {}
        for split in ("train", "val", "test"):
            shots = self.read(data_root, split).shots
            if split == "train":
                shots = _balanced_shots(shots, budget.max_train_images, len)
            else:
                shots = _balanced_shots(shots, budget.max_eval_images, lambda ss: sum(len(s.frames) for s in ss))
            frames = VideoFrames(root, shots, self.subsets, input_size=size, eval_size=self.eval_size,
                                 train=split == "train", with_boxes=split != "train", with_masks=False,
                                 crop_from=budget.crop_from)
            out[split] = ShotFrames(frames, self.train_draws_per_shot) if split == "train" else frames
        return Splits(out["train"], out["val"], out["test"], self.num_classes)
