"""MaskEvaluator and normalize_scoremaps on hand-made fixtures (answers in the comments)."""
import numpy as np
import pytest
import torch

from bench._ext import has_op
from bench.metrics import MaskEvaluator, normalize_scoremaps
from bench.metrics.mask import mask_histogram_reference


def _four_pixels():
    # fg scores 0.75, 0.375; bg scores 0.625, 0.125 (exact in float32).
    s = torch.tensor([[[0.75, 0.375], [0.625, 0.125]]])
    m = torch.tensor([[[1, 1], [0, 0]]], dtype=torch.uint8)
    return s, m


def test_pxap_hand_computed():
    # Going down the thresholds: at 0.75 TP=1 FP=0 (P=1, R=1/2); at 0.625 TP=1 FP=1 (P=1/2,
    # R=1/2, no recall change); at 0.375 TP=2 FP=1 (P=2/3, R=1).
    # AP = 1 * 1/2 + 2/3 * 1/2 = 5/6 -> 83.333.
    ev = MaskEvaluator()
    ev.accumulate(*_four_pixels())
    assert ev.compute()["PxAP"] == pytest.approx(500 / 6)
    c = ev.curves()
    assert c["precision"].shape == c["recall"].shape == (1002,)
    assert c["recall"][-1] == 1.0


def test_dice_miou_at_tau_and_best_tau():
    # tau = 0.5 (predicted fg: score >= tau): TP = 1 (0.75), FN = 1 (0.375), FP = 1 (0.625),
    # TN = 1 (0.125). Dice-fg = 2/(2+1+1) = 50, Dice-bg = 50, IoU fg = bg = 1/3 -> mIoU 33.33.
    ev = MaskEvaluator()
    ev.accumulate(*_four_pixels())
    r = ev.compute(tau=0.5)
    assert r["tau"] == 0.5
    assert r["Dice-fg"] == pytest.approx(50) and r["Dice-bg"] == pytest.approx(50)
    assert r["mIoU"] == pytest.approx(100 / 3)
    # mIoU per tau: (0.125, 0.375] -> TP2 FP1 TN1 FN0: (2/3 + 1/2)/2 = 58.33 (first maximum);
    # (0.625, 0.75] -> TP1 FN1 TN2: (1/2 + 2/3)/2 = 58.33 as well; <= 0.125 or > 0.75: 25.
    # best_tau = first grid value above 0.125 = 0.126.
    r = ev.compute()
    assert r["best_tau"] == pytest.approx(0.126) and r["tau"] == r["best_tau"]
    assert r["mIoU"] == pytest.approx(175 / 3)
    # Dice there: fg 2*2/(4+1) = 80, bg 2*1/(2+1) = 66.67
    assert r["Dice-fg"] == pytest.approx(80) and r["Dice-bg"] == pytest.approx(200 / 3)


def test_perfect_separation_and_ignore_pixels():
    # fg 0.9, bg 0.1 -> AP 100. Ignore pixels (255) with score 0.95 must not count: counted as
    # background they would be false positives above every foreground pixel (AP 50 here).
    s = torch.tensor([[[0.9, 0.9, 0.1, 0.1, 0.95, 0.95]]])
    m = torch.tensor([[[1, 1, 0, 0, 255, 255]]], dtype=torch.uint8)
    ev = MaskEvaluator()
    ev.accumulate(s, m)
    assert ev.compute()["PxAP"] == pytest.approx(100)
    assert int(ev.hist_fg.sum()) == 2 and int(ev.hist_bg.sum()) == 2
    ev2 = MaskEvaluator()
    ev2.accumulate(s, torch.tensor([[[1, 1, 0, 0, 0, 0]]], dtype=torch.uint8))
    # at 0.95: TP 0 FP 2 (P 0, R 0); at 0.9: TP 2 FP 2 (P 1/2, R 1) -> AP 50
    assert ev2.compute()["PxAP"] == pytest.approx(50)


def test_score_one_and_streaming_equals_one_shot():
    rng = torch.Generator().manual_seed(0)
    s = torch.rand(6, 9, 11, generator=rng)
    s[:, 0, 0] = 1.0
    s[:, 0, 1] = 0.0
    m = (torch.rand(6, 9, 11, generator=rng) < s).to(torch.uint8)
    m[:, 3] = 255
    a, b = MaskEvaluator(), MaskEvaluator()
    a.accumulate(s, m)
    b.accumulate(s[:2], m[:2])
    b.accumulate(s[2:], m[2:])
    assert torch.equal(a.hist_fg, b.hist_fg) and a.compute() == b.compute()
    # numpy.histogram with the reference's edges gives the same counts
    edges = np.append(np.arange(0, 1, 0.001), [1.0, 2.0, 3.0])
    hf, _ = np.histogram(s.numpy()[m.numpy() == 1], bins=edges)
    hb, _ = np.histogram(s.numpy()[m.numpy() == 0], bins=edges)
    assert (a.hist_fg.numpy() == hf).all() and (a.hist_bg.numpy() == hb).all()
    # and the reference's AP formula (NaN precision where nothing is predicted -> nansum)
    tp = hf[::-1].cumsum(); fn = hf.sum() - tp; fp = hb[::-1].cumsum()
    with np.errstate(all="ignore"):
        p, r = tp / (tp + fp), tp / (tp + fn)
    assert a.compute()["PxAP"] == pytest.approx(np.nansum(p[1:] * np.diff(r)) * 100)


@pytest.mark.skipif(not has_op("mask_histogram"), reason="bench._C not built")
def test_histogram_op_matches_reference_at_edges():
    ev = MaskEvaluator()
    edges = torch.from_numpy(np.arange(0, 1, 0.001)).float()
    # scores on and around every edge
    s = torch.cat([edges, torch.nextafter(edges, torch.tensor(2.0)), torch.nextafter(edges, torch.tensor(-1.0)).clamp(0),
                   torch.tensor([1.0, 0.0])])
    m = torch.randint(0, 2, s.shape, dtype=torch.uint8)
    got = torch.ops.wsolbench.mask_histogram(s, m, ev._edges32, 0.001)
    assert torch.equal(got, mask_histogram_reference(s, m, ev._edges32))


@pytest.mark.parametrize("make, err", [
    (lambda: (torch.zeros(1, 4, 4), torch.zeros(1, 4, 5, dtype=torch.uint8)), ValueError),
    (lambda: (torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)), TypeError),  # float mask
    (lambda: (torch.zeros(1, 4, 4), torch.full((1, 4, 4), 2, dtype=torch.uint8)), ValueError),
    (lambda: (torch.full((1, 4, 4), -0.1), torch.zeros(1, 4, 4, dtype=torch.uint8)), ValueError),
    (lambda: (torch.full((1, 4, 4), float("nan")), torch.zeros(1, 4, 4, dtype=torch.uint8)), ValueError),
    (lambda: (torch.zeros(4, 4), torch.zeros(4, 4, dtype=torch.uint8)), ValueError),
])
def test_bad_inputs(make, err):
    with pytest.raises(err):
        MaskEvaluator().accumulate(*make())


def test_no_foreground_is_an_error():
    ev = MaskEvaluator()
    with pytest.raises(RuntimeError):
        ev.compute()
    ev.accumulate(torch.rand(1, 3, 3), torch.zeros(1, 3, 3, dtype=torch.uint8))
    with pytest.raises(RuntimeError):
        ev.compute()
    ev.accumulate(torch.rand(1, 3, 3), torch.ones(1, 3, 3, dtype=torch.uint8))
    with pytest.raises(ValueError):
        ev.compute(tau=1.5)


def test_normalize_scoremaps():
    cams = torch.tensor([[[1.0, 3.0], [5.0, 9.0]], [[2.0, 2.0], [2.0, 2.0]],
                         [[0.0, float("nan")], [1.0, 2.0]]])
    out = normalize_scoremaps(cams, (2, 2))
    # (x - 1) / 8; constant -> zeros; NaN -> zeros
    assert torch.allclose(out[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert (out[1] == 0).all() and (out[2] == 0).all()
    big = normalize_scoremaps(torch.rand(3, 7, 7), (28, 21))
    assert big.shape == (3, 28, 21) and big.dtype == torch.float32
    assert torch.allclose(big.amin((1, 2)), torch.zeros(3)) and torch.allclose(big.amax((1, 2)), torch.ones(3))
    # the resize is the reference's cv2.INTER_CUBIC (then min-max normalised)
    import cv2
    import numpy as np

    small = torch.rand(1, 7, 9, dtype=torch.float32)
    ref = cv2.resize(small[0].numpy(), (36, 28), interpolation=cv2.INTER_CUBIC)
    ref = (ref - ref.min()) / (ref - ref.min()).max()
    assert np.abs(normalize_scoremaps(small, (28, 36))[0].numpy() - ref).max() < 1e-5
    with pytest.raises(ValueError):
        normalize_scoremaps(torch.rand(2, 3), (4, 4))
    with pytest.raises(TypeError):
        normalize_scoremaps(torch.zeros(1, 2, 2, dtype=torch.long), (4, 4))


def test_top1_cls():
    from bench.metrics import Top1Cls

    t = Top1Cls()
    # argmax [1, 0, 2] vs labels [1, 1, 2] -> 2 of 3
    ok = t.accumulate(torch.tensor([[0.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]), torch.tensor([1, 1, 2]))
    assert ok.tolist() == [True, False, True]
    assert t.compute()["Top-1 Cls"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError):
        t.accumulate(torch.zeros(2, 3), torch.zeros(3))
