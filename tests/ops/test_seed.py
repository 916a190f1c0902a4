import math

import numpy as np
import pytest
import torch

from bench.ops.seed import FG_MODES, IGNORE, SeedConfig, make_seeds, otsu_threshold, quantize


def _bimodal(B=6, H=24, W=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = []
    for i in range(B):
        yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        cy, cx = torch.randint(4, H - 4, (1,), generator=g), torch.randint(4, W - 4, (1,), generator=g)
        r = 3 + i % 4
        inside = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r
        lo, hi = 0.1 + 0.1 * torch.rand(1, generator=g), 0.6 + 0.2 * torch.rand(1, generator=g)
        m = torch.where(inside, hi, lo) + 0.08 * torch.randn(H, W, generator=g)
        maps.append(m.clamp(0, 1))
    return torch.stack(maps)


def _numpy_otsu(q):
    """Textbook Otsu on one uint8 map: first t maximising w0 w1 (mu0 - mu1)^2, split q <= t."""
    hist = np.bincount(q.ravel(), minlength=256).astype(np.float64)
    n = hist.sum()
    levels = np.arange(256, dtype=np.float64)
    best, best_t = -1.0, 255
    for t in range(256):
        n0 = hist[: t + 1].sum()
        n1 = n - n0
        if n0 == 0 or n1 == 0:
            continue
        mu0 = (hist[: t + 1] * levels[: t + 1]).sum() / n0
        mu1 = (hist[t + 1 :] * levels[t + 1 :]).sum() / n1
        var = (n0 / n) * (n1 / n) * (mu0 - mu1) ** 2
        if var > best * (1 + 1e-12):
            best, best_t = var, t
    return best_t


def test_otsu_matches_numpy():
    cams = torch.cat([_bimodal(seed=1), torch.rand(3, 24, 20, generator=torch.Generator().manual_seed(2))])
    q = quantize(cams)
    t = otsu_threshold(cams)
    for i in range(cams.shape[0]):
        ref = _numpy_otsu(q[i].numpy())
        # equal up to empty bins between the modes (the same split of the pixels)
        assert torch.equal(q[i] > t[i], q[i] > ref), (i, int(t[i]), ref)


def test_constant_map_gets_no_seed():
    # the authors' seeders skip a map with min == max (fcam-wsol `_bad_egg`, tcam `_OneSample`)
    cams = torch.full((2, 8, 8), 0.4)
    assert otsu_threshold(cams).tolist() == [255, 255]
    for cfg in (SeedConfig(n_fg=3, n_bg=2), SeedConfig(n_fg=3, n_bg=2, roi="none", fg_mode="proportional",
                                                       bg_mode="complement", bg_fraction=1.0)):
        labels = make_seeds(cams, cfg, torch.Generator().manual_seed(0))
        assert bool((labels == IGNORE).all())


@pytest.mark.parametrize("mode", FG_MODES)
def test_seed_counts_and_roi(mode):
    cams = _bimodal()
    cfg = SeedConfig(n_fg=3, n_bg=4, fg_mode=mode, dilate=False)
    labels, info = make_seeds(cams, cfg, torch.Generator().manual_seed(3), return_info=True)
    assert labels.shape == cams.shape and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) <= {0, 1, IGNORE}
    assert bool(info.fg_valid.all()) and bool(info.bg_valid.all())
    assert (labels == 1).sum((1, 2)).tolist() == [3] * cams.shape[0]
    assert (labels == 0).sum((1, 2)).tolist() == [4] * cams.shape[0]
    # foreground seeds lie in the Otsu ROI, background seeds among the lowest 10 %
    assert bool(info.roi[labels == 1].all())
    flat = cams.flatten(1)
    k = math.ceil(0.1 * flat.shape[1])
    thr = flat.kthvalue(k, dim=1).values
    assert bool((cams <= thr[:, None, None])[labels == 0].all())
    if mode == "top":  # among the top 60 % of the ROI
        for i in range(cams.shape[0]):
            vals = cams[i][info.roi[i]].sort(descending=True).values
            cut = vals[math.ceil(0.6 * vals.numel()) - 1]
            assert bool((cams[i][labels[i] == 1] >= cut).all())


def test_dilation_and_conflicts_become_ignore():
    cams = _bimodal(B=4)
    labels, info = make_seeds(cams, SeedConfig(n_fg=1, n_bg=1), torch.Generator().manual_seed(5), return_info=True)
    for i in range(4):
        fy, fx = divmod(int(info.fg_index[i, 0]), cams.shape[2])
        patch = labels[i, max(fy - 1, 0) : fy + 2, max(fx - 1, 0) : fx + 2]
        assert bool(((patch == 1) | (patch == IGNORE)).all()) and bool((patch == 1).any())
    # a map where the only low pixels surround the only high one: fg and bg dilations overlap
    cams = torch.full((1, 5, 5), 0.5)
    cams[0, 2, 2], cams[0, 2, 3] = 1.0, 0.0
    labels = make_seeds(cams, SeedConfig(n_fg=1, n_bg=1, bg_fraction=0.04), torch.Generator().manual_seed(0))
    assert labels[0, 2, 2].item() == IGNORE and labels[0, 2, 3].item() == IGNORE


def test_empty_roi_after_erosion():
    cams = torch.full((2, 12, 12), 0.1)
    cams[0, 5, 5] = 0.9  # one-pixel ROI: erodes away
    cams[1, 3:9, 3:9] = 0.9  # 6x6 ROI: survives a 3x3 erosion as 4x4
    labels, info = make_seeds(cams, SeedConfig(n_fg=2, n_bg=2, erode_size=3, erode_revert=False, dilate=False),
                              torch.Generator().manual_seed(0), return_info=True)
    assert int(info.roi[0].sum()) == 0 and int(info.roi[1].sum()) == 16
    assert int((labels[0] == 1).sum()) == 0 and int((labels[1] == 1).sum()) == 2
    assert bool((labels == 0).any(dim=(1, 2)).all())
    # fcam-wsol's rule: an ROI that erodes away is restored (the one pixel is the seed)
    labels, info = make_seeds(cams, SeedConfig(n_fg=2, n_bg=2, erode_size=3, dilate=False),
                              torch.Generator().manual_seed(0), return_info=True)
    assert int(info.roi[0].sum()) == 1 and int(info.roi[1].sum()) == 16
    assert labels[0, 5, 5] == 1


def test_deterministic_for_generator_state():
    cams = _bimodal()
    for mode in FG_MODES:
        cfg = SeedConfig(n_fg=2, n_bg=2, fg_mode=mode, erode_size=3)
        a = make_seeds(cams, cfg, torch.Generator().manual_seed(7))
        b = make_seeds(cams, cfg, torch.Generator().manual_seed(7))
        c = make_seeds(cams, cfg, torch.Generator().manual_seed(8))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
    g = torch.Generator().manual_seed(7)
    state = g.get_state()
    first = make_seeds(cams, cfg, g)
    g.set_state(state)
    assert torch.equal(make_seeds(cams, cfg, g), first)


def test_proportional_prefers_high_values():
    cams = torch.full((1, 10, 10), 0.2)
    cams[0, :, :5] = 0.9
    hits = torch.zeros(10, 10)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        labels, info = make_seeds(cams, SeedConfig(n_fg=1, fg_mode="proportional", dilate=False), g, return_info=True)
        hits += (labels[0] == 1).float()
    assert bool(info.roi[0, :, :5].all())
    assert hits[:, :5].sum() == 30


def test_uint8_output_and_bad_inputs():
    cams = _bimodal(B=2)
    labels = make_seeds(cams, SeedConfig(), torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert labels.dtype == torch.uint8
    with pytest.raises(ValueError, match=r"cams must be \[B, H, W\]"):
        make_seeds(cams[0], SeedConfig())
    with pytest.raises(ValueError, match="cams must be a floating-point tensor"):
        make_seeds((cams * 255).long(), SeedConfig())
    with pytest.raises(ValueError, match="fg_mode must be one of"):
        SeedConfig(fg_mode="best")
    with pytest.raises(ValueError, match="erode_size must be 0, 1 or an odd size"):
        SeedConfig(erode_size=4)
    with pytest.raises(ValueError, match=r"bg_fraction must be in \(0, 1\]"):
        SeedConfig(bg_fraction=0)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", FG_MODES)
def test_cuda_seeds(mode):
    cams = _bimodal()
    cfg = SeedConfig(n_fg=3, n_bg=4, fg_mode=mode, dilate=False)
    g = torch.Generator(device="cuda").manual_seed(3)
    labels, info = make_seeds(cams.cuda(), cfg, g, return_info=True)
    assert labels.is_cuda
    torch.testing.assert_close(info.threshold.cpu(), otsu_threshold(cams))
    assert (labels == 1).sum((1, 2)).tolist() == [3] * cams.shape[0]
    assert bool(info.roi[labels == 1].all())
    g2 = torch.Generator(device="cuda").manual_seed(3)
    assert torch.equal(make_seeds(cams.cuda(), cfg, g2), labels)


@pytest.mark.parametrize("k", [3, 5])
def test_erosion_matches_min_pool(k):
    from bench.ops.seed import _erode

    roi = torch.rand(3, 17, 13, generator=torch.Generator().manual_seed(k)) > 0.2
    ref = -torch.nn.functional.max_pool2d(-roi[:, None].float(), k, stride=1, padding=k // 2)[:, 0] > 0
    assert torch.equal(_erode(roi, k), ref)


def test_dilation_matches_max_pool():
    from bench.ops.seed import _paint

    g = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(11 * 9, generator=g)[:6] for _ in range(4)])
    ok = torch.rand(4, 6, generator=g) > 0.3
    dense = torch.zeros(4, 11 * 9, dtype=torch.bool)
    for b in range(4):
        dense[b, idx[b][ok[b]]] = True
    ref = torch.nn.functional.max_pool2d(dense.view(4, 1, 11, 9).float(), 3, stride=1, padding=1)[:, 0] > 0
    assert torch.equal(_paint(idx, ok, 11, 9, True), ref)
    assert torch.equal(_paint(idx, ok, 11, 9, False), dense.view(4, 11, 9))
