"""TCAM and CoLo-CAM mechanisms: CAM-TMP seeds from stored per-frame CAMs within shots, clip
batches, the joint colour CRF linking a clip's frames; the video-step profile at small size."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from bench.dataset import ShotFrames, clip_lengths
from bench.ops.seed import IGNORE, SeedConfig
from bench.registry import get_method

SIDE = 16


class _Frames(torch.utils.data.Dataset):
    """A stand-in for `VideoFrames`: frame i's image carries i in its pixels (read back by `_Net`)."""

    def __init__(self, shot_sizes):
        self.shot_frames, ids = [], []
        for s, n in enumerate(shot_sizes):
            self.shot_frames.append(list(range(len(ids), len(ids) + n)))
            ids += [s] * n
        self.shot_ids = torch.tensor(ids)
        self.shots = [SimpleNamespace(label=1) for _ in shot_sizes]

    def without_augmentation(self):
        return self

    def __len__(self):
        return len(self.shot_ids)

    def __getitem__(self, i):
        return {"image": torch.full((3, SIDE, SIDE), i / 100), "label": 1, "index": i, "shot": int(self.shot_ids[i])}


class _Seeder:
    """A seed CAM method whose CAM of frame i is `maps[i]`."""

    def __init__(self, maps):
        self.maps = maps

    def localize(self, images, classes):
        index = (images[:, 0, 0, 0] * 100).round().long()
        return SimpleNamespace(cams=self.maps[index])


def _ctx(batch_size=4):
    return SimpleNamespace(budget=SimpleNamespace(batch_size=batch_size, num_workers=0), device=torch.device("cpu"),
                           seed=0)


def _method(name, **cfg):
    """The method with `cfg` set; keys of `SeedConfig` go into its nested `seed`."""
    cls = get_method(name)
    seed_keys = {f.name for f in dataclasses.fields(SeedConfig)}
    seed = dataclasses.replace(cls.Config().seed, **{k: v for k, v in cfg.items() if k in seed_keys})
    method = cls(cls.Config(seed=seed, **{k: v for k, v in cfg.items() if k not in seed_keys}))
    method.dataset = SimpleNamespace(localization_classes=lambda labels: labels, negative_class=None)
    method.generator = torch.Generator().manual_seed(0)
    method.t = 1.0
    return method


def _blob(top, left, size=5):
    m = torch.zeros(SIDE, SIDE)
    m[top:top + size, left:left + size] = 1.0
    return m


def test_tcam_seeds_come_from_the_previous_frame_of_the_same_shot_only():
    # shot 0: frames 0 (object top-left), 1 (empty CAM), 2 (object bottom-right); shot 1: frames 3 (empty), 4
    maps = torch.stack([_blob(1, 1), torch.zeros(SIDE, SIDE), _blob(10, 10), torch.zeros(SIDE, SIDE), _blob(5, 5)])
    frames = _Frames([3, 2])
    method = _method("tcam", n_fg=4, n_bg=4)
    method.seeder = _Seeder(maps)
    loader = method.train_loader(ShotFrames(frames), _ctx())
    assert method.pooled.shape == (5, SIDE, SIDE)
    batch = next(iter(loader))
    assert {"index", "flip"} <= set(batch)  # what the training hooks read

    index, flip = torch.arange(5), torch.zeros(5, dtype=torch.long)
    images = torch.zeros(5, 3, SIDE, SIDE)
    cams = method.cam_maps(None, None, images, None, index=index, flip=flip)
    seeds = method.seed_maps(cams, images, None)
    near = lambda m: torch.nn.functional.max_pool2d(m[None, None], 3, 1, 1)[0, 0] > 0  # the blob, dilated
    # frame 1: its own CAM is empty, frame 0's is not: foreground seeds inside frame 0's object
    fg1 = seeds[1] == 1
    assert fg1.any() and (fg1 & ~near(maps[0])).sum() == 0
    # frame 3 opens shot 1: frame 2 (shot 0) is never pooled into it, so it has no foreground at all
    assert not (seeds[3] == 1).any() and cams[3].abs().max() == 0
    # frame 2 is pooled with frame 1 (empty): its own object only
    assert (seeds[2] == 1).any() and ((seeds[2] == 1) & ~near(maps[2])).sum() == 0
    # a flipped frame gets its pooled map flipped with it
    flipped = method.cam_maps(None, None, images[:1], None, index=index[:1], flip=torch.ones(1, dtype=torch.long))
    torch.testing.assert_close(flipped[0], cams[0].flip(-1))


def test_tcam_needs_the_frame_index():
    with pytest.raises(ValueError, match="index"):
        _method("tcam").cam_maps(None, None, torch.zeros(1, 3, SIDE, SIDE), None)


def test_colocam_trains_on_clips_of_one_shot():
    frames = _Frames([5, 3, 6, 4])
    method = _method("colocam", n_frames=3, frame_limit=1.0)
    loader = method.train_loader(ShotFrames(frames, draws_per_shot=6), _ctx(batch_size=6))
    seen = 0
    for batch in loader:
        lengths = clip_lengths(batch["shot"])
        assert lengths.tolist() == [3] * len(lengths)  # clips of 3 frames (every shot has >= 3)
        for clip in batch["index"].split(lengths.tolist()):
            assert (clip.diff() == 1).all()  # adjacent frames, in temporal order, of one shot
        seen += len(batch["index"])
    # an epoch sees about as many frames as the frame-wise one (6 draws x 4 shots): 2 passes of 4 clips of 3
    assert seen == 24


def test_colocam_clips_come_from_the_central_frames_of_each_shot():
    from methods.colocam import central_frames
    # colo-cam `get_allowed_int_idx_frames` with sample_fr_limit 0.6
    assert central_frames([7, 8], 0.6) == [7, 8] and central_frames([0, 1, 2], 0.6) == [1]
    assert central_frames(list(range(10)), 0.6) == [2, 3, 4, 5, 6, 7, 8]  # p = 6, half 3, centre 5
    assert central_frames(list(range(5)), 0.6) == [1, 2, 3] and central_frames(list(range(5)), 1.0) == list(range(5))
    frames = _Frames([10, 10])
    method = _method("colocam")
    assert (method.cfg.n_frames, method.cfg.frame_limit) == (2, 0.6)
    loader = method.train_loader(ShotFrames(frames, draws_per_shot=2), _ctx(batch_size=4))
    drawn = {int(i) for _ in range(20) for batch in loader for i in batch["index"]}
    assert drawn and drawn <= set(range(2, 9)) | set(range(12, 19))


def test_colocam_joint_term_is_normalised_per_clip_then_averaged():
    torch.manual_seed(0)
    method = _method("colocam")
    images = torch.rand(4, 3, SIDE, SIDE) * torch.tensor([1.0, 1.0, 0.2, 0.2]).view(4, 1, 1, 1)
    logits = torch.randn(4, 2, SIDE, SIDE) * torch.tensor([1.0, 1.0, 3.0, 3.0]).view(4, 1, 1, 1)
    alone = _joint_grad(method, logits[:2], images[:2], torch.tensor([0, 0]))
    both = _joint_grad(method, logits, images, torch.tensor([0, 0, 1, 1]))
    # colo-cam: lambda / c * sum_c E_c / |E_c|: clip 1's gradient is halved, whatever clip 2's energy
    torch.testing.assert_close(both[:2], alone / 2)


def _joint_grad(method, logits, images, shot):
    logits = logits.clone().requires_grad_(True)
    joint = method.joint_term(logits.softmax(1), images, shot)
    return None if joint is None else torch.autograd.grad(joint, logits)[0]


def test_colocam_joint_crf_links_the_frames_of_a_clip():
    torch.manual_seed(0)
    method = _method("colocam", joint_scale=1.0)
    images = torch.rand(2, 3, SIDE, SIDE)
    images[1, :, :8] = images[0, :, :8]  # colours shared between the frames
    logits = torch.randn(2, 2, SIDE, SIDE)
    other = logits.clone()
    other[1] = torch.randn(2, SIDE, SIDE)  # frame 2's probabilities change, frame 1's do not
    together = torch.tensor([0, 0])
    g, g_other = _joint_grad(method, logits, images, together), _joint_grad(method, other, images, together)
    cos = torch.nn.functional.cosine_similarity(g[0].flatten(), g_other[0].flatten(), dim=0)
    assert cos < 0.99  # not just rescaled by the adaptive weight: frame 1's gradient depends on frame 2
    # clips of one frame (n = 1): no joint term, nothing links the frames
    apart = torch.tensor([0, 1])
    assert _joint_grad(method, logits, images, apart) is None
    seeds = torch.full((2, SIDE, SIDE), IGNORE)
    terms = method.loss_terms(logits, seeds, images, torch.tensor([1, 1]), shot=apart)
    assert "joint_crf" not in terms and "crf" in terms  # the per-frame CRF stays on
    terms = method.loss_terms(logits, seeds, images, torch.tensor([1, 1]), shot=together)
    assert "joint_crf" in terms and "crf" in terms
    assert terms["joint_crf"].item() == pytest.approx(-method.cfg.joint_weight)  # lambda * R / |R|, R < 0
    assert "joint_crf" not in _method("colocam", joint_weight=0.0).loss_terms(logits, seeds, images,
                                                                              torch.tensor([1, 1]), shot=together)


def test_video_step_profile_small():
    from bench.profiling import load_profiles

    (table,) = load_profiles()["video-step"](torch.device("cpu"), "small")
    assert [r["step"].split(" ")[0] for r in table.rows] == ["CAM", "CoLo-CAM", "CoLo-CAM"]
    assert all(r["ms"] > 0 for r in table.rows)
    assert table.rows[1]["ratio"] == pytest.approx(table.rows[1]["ms"] / table.rows[0]["ms"], rel=0.01)
    assert all(r["GFLOP"] > 0 for r in table.rows)
    assert table.rows[1]["GFLOP"] == table.rows[2]["GFLOP"]  # the joint CRF adds no convolution or matmul
