"""The video track: synth-video, the YTO layout reader, the shot sampler, CAM-TMP in the data
path and CorLoc on hand-made fixtures."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cams.temporal import shot_pooled_cams
from bench.config import BUDGETS
from bench.data.metadata import MetadataError
from bench.data.synthetic_video import SynthVideoConfig, generate_video, prepare_video, shot_frames
from bench.data.video import read_video_split
from bench.dataset import ShotClipSampler, clip_lengths
from bench.dataset import collate
from bench.grid import build_cells
from bench.metrics import BoxEvaluator, CorLocEvaluator
from bench.registry import get_dataset
from tests.harness import settings_at

SMOKE = BUDGETS["smoke"]
TINY = SynthVideoConfig(image_size=32, num_classes=2, frames_per_shot=4, n_train=2, n_val=1, n_test=2)


# ----------------------------------------------------------------------------- synth-video
def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_video_is_deterministic(tmp_path):
    generate_video(tmp_path / "a", TINY)
    generate_video(tmp_path / "b", TINY)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and len(a) > 20
    # a shot is a function of (seed, split, class, index) only: not of the generation order
    frames, masks, boxes, motion = shot_frames(TINY, "test", 1, 1)
    again = shot_frames(SynthVideoConfig(**{**TINY.__dict__, "n_train": 5}), "test", 1, 1)
    assert np.array_equal(frames, again[0]) and motion == "fast" and shot_frames(TINY, "test", 1, 0)[3] == "slow"
    for k in range(TINY.frames_per_shot):  # boxes are the mask extents, inside the frame
        ys, xs = np.nonzero(masks[k])
        assert tuple(boxes[k]) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_synth_video_motion_regimes_differ():
    cfg = SynthVideoConfig(image_size=64, frames_per_shot=8)
    shift = {}
    for index in (0, 1, 2, 3):
        _, masks, _, motion = shot_frames(cfg, "test", 0, index)
        centres = np.array([np.argwhere(m).mean(0) for m in masks])
        shift.setdefault(motion, []).append(np.linalg.norm(np.diff(centres, axis=0), axis=1).mean())
    assert max(shift["slow"]) < 2.0 < 5.0 < min(shift["fast"])


def test_motion_overlap_separates_the_regimes():
    from bench.data.synthetic_video import motion_overlap

    cfg = SynthVideoConfig(image_size=64, frames_per_shot=8, num_classes=2, n_test=4)
    pixels, at_cam = motion_overlap(cfg), motion_overlap(cfg, stride=4)
    for overlap in (pixels, at_cam):
        assert overlap["slow"]["iou"] > 0.75 and overlap["fast"]["iou"] < 0.5
        assert overlap["fast"]["covered"] < overlap["slow"]["covered"] <= 1.0
    assert at_cam["fast"]["iou"] >= pixels["fast"]["iou"]  # coarser maps overlap more


def test_synth_video_layout_and_prepare(tmp_path):
    prepare_video(tmp_path, TINY)
    marker = tmp_path / "synth-video" / "GENERATOR.json"
    stamp = marker.stat().st_mtime_ns
    prepare_video(tmp_path, TINY)  # same config: not regenerated
    assert marker.stat().st_mtime_ns == stamp and json.loads(marker.read_text())["config"]["n_test"] == 2
    meta = tmp_path / "metadata" / "synth-video"
    train_ids = (meta / "train" / "image_ids.txt").read_text().split()
    assert len(train_ids) == 4 and all(len(i.split("/")) == 3 for i in train_ids)  # <class>/<video>/<shot>
    test_ids = (meta / "test" / "image_ids.txt").read_text().split()
    assert len(test_ids) == 2 * 2 * 2  # classes x shots x frames with boxes (every 2nd of 4)
    assert all((tmp_path / "synth-video" / i).is_file() for i in test_ids)
    assert len(list((tmp_path / "synth-video" / Path(test_ids[0]).parent).glob("*.png"))) == 4


def test_synth_video_splits_items(tmp_path):
    ds = get_dataset("synth-video")(TINY)
    ds.prepare(tmp_path)
    splits = ds.splits(tmp_path, SMOKE)
    assert len(splits.train) == 4 * ds.train_draws_per_shot and len(splits.train.frames) == 16
    assert splits.num_classes == 2 and ds.task == "video" and ds.primary_metric == "CorLoc"
    batch = collate([splits.test[i] for i in range(len(splits.test))])
    assert batch["boxes"][0].shape == (1, 4) and batch["image"].shape[1:] == (3, 32, 32)
    assert batch["subset"].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]  # slow, fast shots per class
    assert batch["shot"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and batch["position"].tolist() == [0, 1] * 4
    item = splits.train[5]  # one random frame of shot 5 mod 4
    assert item["shot"] == 1 and item["label"] == splits.train.frames.shots[1].label


# ----------------------------------------------------------------------------- sampler
def test_sampler_never_mixes_shots():
    lengths = [5, 1, 3, 8, 2, 4, 6]
    shots, start = [], 0
    for n in lengths:
        shots.append(list(range(start, start + n)))
        start += n
    shot_of = {i: s for s, members in enumerate(shots) for i in members}
    for direction in ("before", "after", "both"):
        sampler = ShotClipSampler(shots, clip_length=3, clips_per_batch=2, direction=direction, seed=1)
        for _ in range(20):
            seen = []
            for batch in sampler:
                shot_tensor = torch.tensor([shot_of[i] for i in batch])
                runs = clip_lengths(shot_tensor).tolist()
                pos = 0
                for n in runs:
                    clip = batch[pos:pos + n]
                    s = shot_of[clip[0]]
                    assert all(shot_of[i] == s for i in clip)
                    assert clip == list(range(clip[0], clip[0] + n))  # consecutive frames, temporal order
                    assert n == min(3, lengths[s])
                    seen.append(s)
                    pos += n
                assert pos == len(batch) and len(runs) <= 2
            assert sorted(seen) == list(range(len(lengths)))  # every shot once per epoch
        assert len(sampler) == 4


def test_sampler_anchor_placement():
    sampler = ShotClipSampler([list(range(10))], clip_length=3, clips_per_batch=1, direction="before")
    assert sampler.clip(list(range(10)), 5) == [3, 4, 5] and sampler.clip(list(range(10)), 0) == [0, 1, 2]
    sampler.direction = "after"
    assert sampler.clip(list(range(10)), 5) == [5, 6, 7] and sampler.clip(list(range(10)), 9) == [7, 8, 9]
    sampler.direction = "both"
    assert sampler.clip(list(range(10)), 5) == [4, 5, 6]


# ----------------------------------------------------------------------------- CAM-TMP data path
def test_cam_tmp_never_pools_across_shots():
    # three shots of 3, 1 and 4 frames; every frame's map is a one-hot pixel plus its shot's level
    shot_ids = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2])
    N, h, w = len(shot_ids), 4, 4
    cams = torch.zeros(N, h, w)
    for i in range(N):
        cams[i].view(-1)[i] = 1.0
    pooled = shot_pooled_cams(cams, shot_ids, n=1, direction="before")
    for i in range(N):
        hot = set(torch.nonzero(pooled[i].view(-1) > 0.5).view(-1).tolist())
        expected = {i} | ({i - 1} if i > 0 and shot_ids[i - 1] == shot_ids[i] else set())
        assert hot == expected, (i, hot)
    wide = shot_pooled_cams(cams, shot_ids, n=10, direction="both")
    for i in range(N):
        hot = set(torch.nonzero(wide[i].view(-1) > 0.5).view(-1).tolist())
        assert hot == {j for j in range(N) if shot_ids[j] == shot_ids[i]}


# ----------------------------------------------------------------------------- CorLoc
def _maps_fixture():
    """Four 16x16 frames, GT box (4,4)-(9,9). 'H' is right only at a high threshold (a halo of
    0.5 around the box), 'L' only at a low one (box at 0.5 with a bright 2x2 core), 'A' always."""
    box = torch.tensor([[4.0, 4.0, 9.0, 9.0]])
    H = torch.zeros(16, 16)
    H[1:14, 1:14] = 0.5
    H[4:10, 4:10] = 1.0
    L = torch.zeros(16, 16)
    L[4:10, 4:10] = 0.5
    L[6:8, 6:8] = 1.0
    A = torch.zeros(16, 16)
    A[4:10, 4:10] = 1.0
    maps = torch.stack([H, H, L, A])
    return maps, [box] * 4, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, -1])


def test_corloc_both_variants_on_a_known_fixture():
    maps, boxes, labels, subsets = _maps_fixture()
    ev = CorLocEvaluator(num_classes=3, subsets=("slow", "fast"))
    ev.accumulate(maps[:2], boxes[:2], labels[:2], subsets[:2])  # streaming over batches
    ev.accumulate(maps[2:], boxes[2:], labels[2:], subsets[2:])
    res = ev.compute()
    # one tau for all frames: low tau 2/4 (L, A), high tau 3/4 (H, H, A)
    assert res["CorLoc"] == pytest.approx(75.0)
    # tau per class: class 0 100 (high tau), class 1 100 (low tau); class 2 has no frame
    assert res["CorLoc-classmean"] == pytest.approx(100.0)
    assert res["best_tau"] == pytest.approx(0.499)  # first tau whose level int(tau*255) is 127
    # subsets at the pooled tau: slow = the two H frames, fast = the L frame (A is in none)
    assert res["CorLoc-slow"] == pytest.approx(100.0) and res["CorLoc-fast"] == pytest.approx(0.0)
    assert res["annotated_frames"] == 4
    ref = BoxEvaluator(iou_thresholds=(0.5,))
    ref.accumulate(maps, boxes)
    assert ref.compute()["MaxBoxAcc"] == pytest.approx(res["CorLoc"])  # CorLoc is MaxBoxAcc@0.5


def test_corloc_rejects_bad_inputs():
    maps, boxes, labels, _ = _maps_fixture()
    ev = CorLocEvaluator(num_classes=2)
    with pytest.raises(ValueError, match="frames without boxes"):
        ev.accumulate(maps[:1], [torch.zeros(0, 4)], labels[:1])
    with pytest.raises(ValueError, match="class ids"):
        ev.accumulate(maps[:1], boxes[:1], torch.tensor([5]))
    with pytest.raises(RuntimeError, match="nothing accumulated"):
        ev.compute()


# ----------------------------------------------------------------------------- YTO layouts
SIZE = (40, 30)


def _frame(path: Path, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)).save(path)


def write_yto_tree(name: str, root: Path) -> Path:
    """A tiny YTO tree in the plugin's layout: 2 train shots, 2 val/test shots of 3 frames."""
    ds = get_dataset(name)()
    rng = np.random.default_rng(0)
    frames_root, v1 = ds.frame_root(root), name == "ytov1"

    def shot(cls: str, k: int) -> str:
        return f"{cls}/data/{k:04d}/shots/{k:03d}" if v1 else f"{cls}/video-{k:04d}/shot-{k:06d}"

    def frame(k: int) -> str:
        return f"frame{k + 1:04d}.jpg" if v1 else f"{k + 1:08d}.jpg"

    for split, shots in (("train", [("aeroplane", 1), ("car", 2)]), ("val", [("bird", 3), ("car", 4)]),
                         ("test", [("aeroplane", 5), ("dog", 6)])):
        meta = ds.meta_dir(root, split)
        meta.mkdir(parents=True, exist_ok=True)
        ids, labels, sizes, boxes = [], [], [], []
        for cls, k in shots:
            label = ds.class_names.index(cls)
            for t in range(3):
                _frame(frames_root / shot(cls, k) / frame(t), rng)
            if split == "train":
                ids.append(shot(cls, k))
                labels.append(f"{shot(cls, k)},{label}")
                continue
            for t in range(3):
                path = f"{shot(cls, k)}/{frame(t)}"
                ids.append(path)
                labels.append(f"{path},{label}")
                sizes.append(f"{path},{SIZE[0]},{SIZE[1]}")
                # v1: fractional boxes; v2.2: 1-based, may reach the width
                boxes.append(f"{path},2.5,3.25,20.75,17.5" if v1 else f"{path},1,1,{SIZE[0]},{SIZE[1] - 5}")
            if t == 2 and k == 5:
                boxes.append(f"{path},0,0,5,5")  # a second box on one frame
        (meta / "image_ids.txt").write_text("".join(i + "\n" for i in ids))
        (meta / "class_labels.txt").write_text("".join(i + "\n" for i in labels))
        if split != "train":
            (meta / "image_sizes.txt").write_text("".join(i + "\n" for i in sizes))
            (meta / "localization.txt").write_text("".join(i + "\n" for i in boxes))
    return root


@pytest.mark.parametrize("name", ("ytov1", "ytov22"))
def test_yto_tree_loads(name, tmp_path):
    root = write_yto_tree(name, tmp_path)
    ds = get_dataset(name)()
    assert ds.missing(root) is None and ds.task == "video" and ds.num_classes == 10
    assert "metadata/" in ds.__doc__ and ds.frame_dir in ds.__doc__
    splits = ds.splits(root, SMOKE)
    assert len(splits.train) == 2 and len(splits.train.frames) == 6  # frames listed from the shot folders
    assert len(splits.test) == 6 and len(splits.val) == 6
    item = splits.test[2]
    assert item["image"].shape == (3, 224, 224) and item["label"] == 0 and item["subset"] == -1
    assert item["boxes"].shape == (2, 4) and item["boxes"].max() <= 223  # clipped to the frame
    if name == "ytov1":  # fractional corners: scaled to 224 then floored
        assert item["boxes"][0].tolist() == [int(2.5 * 224 / 40), int(3.25 * 224 / 30), int(20.75 * 224 / 40),
                                             int(17.5 * 224 / 30)]
    else:  # 1-based corner reaching the width -> the last column
        assert item["boxes"][0, 2].item() == int((SIZE[0] - 1) * 224 / SIZE[0])  # clipped to column 39


def test_yto_missing_box_file_names_the_file(tmp_path):
    root = write_yto_tree("ytov22", tmp_path)
    ds = get_dataset("ytov22")()
    loc = ds.meta_dir(root, "test") / "localization.txt"
    loc.unlink()
    with pytest.raises(MetadataError, match=f"{loc}: metadata file is missing"):
        ds.splits(root, SMOKE)


def test_yto_frame_without_boxes_is_skipped(tmp_path, caplog):
    root = write_yto_tree("ytov22", tmp_path)
    ds = get_dataset("ytov22")()
    loc = ds.meta_dir(root, "test") / "localization.txt"
    lines = loc.read_text().splitlines()
    unboxed = lines[0].split(",")[0]
    loc.write_text("".join(line + "\n" for line in lines if not line.startswith(unboxed + ",")))
    with caplog.at_level("INFO"):
        split = read_video_split(ds.meta_dir(root, "test"), ds.frame_root(root), "frames")
    assert split.skipped_frames == [unboxed] and "1 listed frames have no box" in caplog.text
    assert sum(len(s.frames) for s in split.shots) == 5
    assert len(ds.splits(root, SMOKE).test) == 5


def test_yto_errors_name_file_and_line(tmp_path):
    root = write_yto_tree("ytov1", tmp_path)
    ds = get_dataset("ytov1")()
    loc = ds.meta_dir(root, "val") / "localization.txt"
    lines = loc.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 2)[0] + ",1.0,2.0"  # x1 < x0
    loc.write_text("\n".join(lines) + "\n")
    with pytest.raises(MetadataError, match=f"{loc}:2: box"):
        ds.splits(root, SMOKE)
    problems: list[str] = []
    read_video_split(ds.meta_dir(root, "val"), ds.frame_root(root), "frames", problems=problems)
    assert len(problems) == 1
    shot_dir = ds.frame_root(root) / "car/data/0002/shots/002"
    for f in shot_dir.iterdir():
        f.unlink()
    with pytest.raises(MetadataError, match=f"{shot_dir}: shot folder .* holds no frames"):
        read_video_split(ds.meta_dir(root, "train"), ds.frame_root(root), "shots")


def test_run_all_skips_absent_yto_with_one_line(tmp_path):
    root = write_yto_tree("ytov22", tmp_path)
    cells, skipped = build_cells(["cam"], None, settings_at(root))
    present = {c.dataset for c in cells}
    reasons = dict(skipped)
    assert "ytov22" in present and "ytov1" not in present
    assert "\n" not in reasons["ytov1"] and str(root / "metadata" / "YouTube-Objects-v1.0") in reasons["ytov1"]
    with pytest.raises(FileNotFoundError, match="not found"):
        build_cells(["cam"], ["ytov1"], settings_at(root))


def test_data_check_reads_the_yto_layout(tmp_path, capsys):
    from bench.cli import main

    root = write_yto_tree("ytov1", tmp_path)
    assert main(["data", "check", "--dataset", "ytov1", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "0 errors" in out and "the published ytov1 train split has 2768" in out
    ds = get_dataset("ytov1")()
    (ds.frame_root(root) / "dog/data/0006/shots/006/frame0002.jpg").unlink()
    (ds.meta_dir(root, "val") / "localization.txt").unlink()
    assert main(["data", "check", "--dataset", "ytov1", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "frame0002.jpg: frame file is missing" in out
    assert f"{ds.meta_dir(root, 'val') / 'localization.txt'}: metadata file is missing" in out


def test_default_synth_video_generation_time(tmp_path, capsys):
    import time

    start = time.perf_counter()
    prepare_video(tmp_path)
    spent = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nsynth-video: {spent:.1f} s (default config)")
    cfg = SynthVideoConfig()
    ids = (tmp_path / "metadata" / "synth-video" / "test" / "image_ids.txt").read_text().split()
    assert len(ids) == cfg.num_classes * cfg.n_test * (cfg.frames_per_shot // cfg.box_every)
    assert spent < 60


def test_frames_without_augmentation(tmp_path):
    from dataclasses import replace

    ds = get_dataset("synth-video")(TINY)
    ds.prepare(tmp_path)
    frames = ds.splits(tmp_path, SMOKE).train.frames
    view = frames.without_augmentation()
    assert not view.train and view._pixels is frames._pixels and len(view) == len(frames)
    assert torch.equal(view[3]["image"], view[3]["image"])  # no random flip
    cropped = ds.splits(tmp_path, replace(SMOKE, input_size=28, crop_from=32)).train.frames
    assert cropped[0]["image"].shape == (3, 28, 28)
    plain = cropped.without_augmentation()
    assert plain.crop_from is None and plain[0]["image"].shape == (3, 28, 28)
