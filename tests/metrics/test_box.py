"""BoxEvaluator on hand-made fixtures; the expected numbers are worked out in the comments."""
import numpy as np
import pytest
import torch

from bench.metrics import BoxEvaluator, normalize_scoremaps


def _eval(maps, boxes, cls=None, **kw):
    ev = BoxEvaluator(**kw)
    ev.accumulate(torch.stack(maps).float(), [torch.tensor(b) for b in boxes], cls)
    return ev


def test_single_box():
    # s = 1 on x 3..7, y 2..5 of a 10x10 map, 0 elsewhere. q = 255 inside, so at every level
    # k <= 254 (every tau: int(0.999 * 255) = 254) the one contour has boundingRect
    # (3, 2, w=5, h=4) -> box [3, 2, 8, 6] (x1 = x + w). GT [3, 2, 7, 5]: inter 20, pred area
    # 6*5 = 30, GT 5*4 = 20 -> IoU 20/30 = 0.667: correct at 0.3 and 0.5, not at 0.7.
    s = torch.zeros(10, 10)
    s[2:6, 3:8] = 1
    res = _eval([s], [[[3, 2, 7, 5]]]).compute()
    assert res["MaxBoxAcc"] == 100 and res["best_tau"] == 0.0
    assert res["MaxBoxAccV2@30"] == 100 and res["MaxBoxAccV2@50"] == 100 and res["MaxBoxAccV2@70"] == 0
    assert res["MaxBoxAccV2"] == pytest.approx(200 / 3)
    assert "Top-1 Loc" not in res
    # GT equal to the reference's (grown) box: IoU 1 everywhere.
    assert _eval([s], [[[3, 2, 8, 6]]]).compute()["MaxBoxAccV2"] == 100


def test_ring_with_hole_v2_sees_the_hole():
    # 12x12, ring = square x,y 2..8 minus the hole x,y 4..6. Outer contour box: [2, 2, 9, 9].
    # Hole contour runs through the ring pixels around the hole: x,y 3..7 -> box [3, 3, 8, 8].
    # GT [3, 3, 8, 8]: V2 finds IoU 1 (the hole box); V1 keeps the largest contour (outer,
    # area 36 vs the hole's 8) -> IoU 36/64 = 0.5625: correct at 0.3, 0.5, not 0.7.
    s = torch.zeros(12, 12)
    s[2:9, 2:9] = 1
    s[4:7, 4:7] = 0
    ev = _eval([s], [[[3, 3, 8, 8]]], iou_thresholds=(0.3, 0.5, 0.7))
    res = ev.compute()
    assert res["MaxBoxAccV2"] == 100 and res["MaxBoxAccV2@70"] == 100
    assert res["MaxBoxAcc"] == 100
    assert ev.curves()["MaxBoxAcc@70"].max() == 0


def test_largest_contour_area_not_pixel_count():
    # 10x30. A: a 1x20 line (20 pixels, contourArea 0) at y=1, x 2..21. B: a 3x3 square
    # (9 pixels, contourArea 4) at x 10..12, y 5..7 -> box [10, 5, 13, 8]. V1 takes B.
    # GT = B's box: IoU 1 with B, 0 with A's box [2, 1, 22, 2].
    s = torch.zeros(10, 30)
    s[1, 2:22] = 1
    s[5:8, 10:13] = 1
    assert _eval([s], [[[10, 5, 13, 8]]]).compute()["MaxBoxAcc"] == 100
    # GT = A's box: V1 misses it at IoU 0.5 (B is larger by area), V2 finds it.
    res = _eval([s], [[[2, 1, 22, 2]]]).compute()
    assert res["MaxBoxAcc"] == 0 and res["MaxBoxAccV2@50"] == 100


def test_tie_goes_to_the_last_region_in_raster_order():
    # Two single pixels (area 0 both) at (x=1, y=1) and (x=6, y=6) of an 8x8 map. cv2 lists
    # top-level contours in reverse raster order and max() keeps the first: (6, 6) wins, whose
    # box is [6, 6, 7, 7].
    s = torch.zeros(8, 8)
    s[1, 1] = s[6, 6] = 1
    assert _eval([s], [[[6, 6, 7, 7]]]).compute()["MaxBoxAcc"] == 100
    assert _eval([s], [[[1, 1, 2, 2]]]).compute()["MaxBoxAcc"] == 0


def test_empty_and_constant_maps():
    # No foreground pixel at any level -> predicted box [0, 0, 0, 0] (area 1).
    # GT [0, 0, 1, 1] (area 4): IoU 1/4 -> never correct. GT [0, 0, 0, 0]: IoU 1.
    z = torch.zeros(6, 6)
    assert _eval([z], [[[0, 0, 1, 1]]]).compute()["MaxBoxAccV2"] == 0
    assert _eval([z], [[[0, 0, 0, 0]]]).compute()["MaxBoxAccV2"] == 100
    const = normalize_scoremaps(torch.full((1, 3, 3), 0.7), (6, 6))
    assert torch.equal(const[0], z)
    ev = BoxEvaluator()
    ev.accumulate(const, [torch.tensor([[0, 0, 1, 1]])])
    assert ev.compute()["MaxBoxAcc"] == 0


def test_tau_to_level_mapping_and_curves():
    # s = 0.5 on a block -> q = uint8(127.5) = 127. Kept at level k iff 127 > k; k = int(tau*255)
    # <= 126 iff tau < 127/255 = 0.49804 -> taus 0.000..0.498 (499 values) see the block,
    # the rest see no foreground (box [0,0,0,0], wrong for this GT).
    s = torch.zeros(10, 10)
    s[3:7, 3:7] = 0.5
    ev = _eval([s], [[[3, 3, 7, 7]]])
    c = ev.curves()["MaxBoxAccV2@50"]
    assert c.shape == (1000,)
    assert (c[:499] == 100).all() and (c[499:] == 0).all()
    res = ev.compute()
    assert res["MaxBoxAcc"] == 100 and res["best_tau"] == 0.0
    # a coarser grid (validation): taus 0, 0.1, ..., 0.9 -> 0.0 .. 0.4 see the block.
    ev2 = _eval([s], [[[3, 3, 7, 7]]], cam_curve_interval=0.1)
    assert list(ev2.curves()["MaxBoxAccV2@50"]) == [100.0] * 5 + [0.0] * 5


def test_top1_loc_and_streaming():
    # Two images, both boxes right, classes [right, wrong] -> Top-1 Loc 50, MaxBoxAcc 100;
    # a third image (other batch) with a wrong box -> MaxBoxAcc 200/3, Top-1 Loc 100/3.
    s = torch.zeros(10, 10)
    s[2:6, 3:8] = 1
    ev = BoxEvaluator()
    ev.accumulate(torch.stack([s, s]), [torch.tensor([[3, 2, 8, 6]])] * 2, torch.tensor([True, False]))
    res = ev.compute()
    assert res["Top-1 Loc"] == 50 and res["MaxBoxAcc"] == 100
    ev.accumulate(s[None], [torch.tensor([[0, 0, 1, 1]])], torch.tensor([True]))
    res = ev.compute()
    assert res["MaxBoxAcc"] == pytest.approx(200 / 3) and res["Top-1 Loc"] == pytest.approx(100 / 3)


def test_multiple_gt_boxes_best_match():
    # One region [3, 2, 8, 6] and two GT boxes, one far away: the best IoU (1) counts.
    s = torch.zeros(10, 10)
    s[2:6, 3:8] = 1
    assert _eval([s], [[[0, 8, 1, 9], [3, 2, 8, 6]]]).compute()["MaxBoxAccV2"] == 100


def test_matches_cv2_pipeline_on_random_maps():
    # End to end against the reference's per-tau loop written with cv2, on a coarse grid.
    from tests.metrics.cv2_oracle import cv2_boxes, iou

    rng = np.random.default_rng(3)
    maps = normalize_scoremaps(torch.rand(6, 5, 6), (20, 24))
    gts = [torch.tensor([[int(rng.integers(0, 8)), int(rng.integers(0, 8)),
                          int(rng.integers(10, 24)), int(rng.integers(10, 20))]]) for _ in range(6)]
    ev = BoxEvaluator(cam_curve_interval=0.01)
    ev.accumulate(maps, gts)
    res = ev.compute()
    taus = np.arange(0, 1, 0.01)
    correct = {d: np.zeros(len(taus)) for d in (0.3, 0.5, 0.7)}
    correct1 = np.zeros(len(taus))
    for s, g in zip(maps.numpy(), gts):
        q = (s * 255).astype(np.uint8)
        for i, tau in enumerate(taus):
            b1, bs = cv2_boxes(q > int(tau * np.max(q)))
            best = max(iou(b, g.numpy().astype(float)).max() for b in bs)
            for d in correct:
                correct[d][i] += best >= d
            correct1[i] += iou(b1, g.numpy().astype(float)).max() >= 0.5
    want_v2 = np.mean([correct[d].max() / 6 * 100 for d in correct])
    assert res["MaxBoxAccV2"] == pytest.approx(want_v2)
    assert res["MaxBoxAcc"] == pytest.approx(correct1.max() / 6 * 100)
    assert res["best_tau"] == taus[np.argmax(correct1)]


@pytest.mark.parametrize("bad, err", [
    (lambda: (torch.zeros(2, 5, 5), [torch.tensor([[0, 0, 1, 1]])]), ValueError),  # 2 maps, 1 box set
    (lambda: (torch.zeros(5, 5), [torch.tensor([[0, 0, 1, 1]])]), ValueError),  # not [B,H,W]
    (lambda: (torch.full((1, 5, 5), 1.5), [torch.tensor([[0, 0, 1, 1]])]), ValueError),  # > 1
    (lambda: (torch.full((1, 5, 5), float("nan")), [torch.tensor([[0, 0, 1, 1]])]), ValueError),
    (lambda: (torch.zeros(1, 5, 5, dtype=torch.uint8), [torch.tensor([[0, 0, 1, 1]])]), TypeError),
    (lambda: (torch.zeros(1, 5, 5), [torch.tensor([[0, 0, 5, 1]])]), ValueError),  # x1 = W
    (lambda: (torch.zeros(1, 5, 5), [torch.tensor([[-1, 0, 2, 1]])]), ValueError),
    (lambda: (torch.zeros(1, 5, 5), [torch.tensor([[3, 0, 2, 1]])]), ValueError),  # x0 > x1
    (lambda: (torch.zeros(1, 5, 5), [torch.zeros(0, 4)]), ValueError),  # no GT box
    (lambda: (torch.zeros(1, 5, 5), [torch.tensor([0, 0, 1, 1])]), ValueError),  # not [M, 4]
    (lambda: (torch.zeros(1, 5, 5), torch.tensor([[0, 0, 1, 1]])), TypeError),  # not a list
])
def test_bad_inputs(bad, err):
    maps, boxes = bad()
    with pytest.raises(err):
        BoxEvaluator().accumulate(maps, boxes)


def test_bad_cls_correct_and_config():
    ev = BoxEvaluator()
    s, b = torch.zeros(1, 5, 5), [torch.tensor([[0, 0, 1, 1]])]
    with pytest.raises(TypeError):
        ev.accumulate(s, b, torch.tensor([1]))
    with pytest.raises(ValueError):
        ev.accumulate(s, b, torch.tensor([True, False]))
    ev.accumulate(s, b, torch.tensor([True]))
    with pytest.raises(ValueError):
        ev.accumulate(s, b)  # cls given before, not now
    with pytest.raises(RuntimeError):
        BoxEvaluator().compute()
    with pytest.raises(ValueError):
        BoxEvaluator(iou_thresholds=(0.5, 1.5))
    with pytest.raises(ValueError):
        BoxEvaluator(cam_curve_interval=0)


def test_fallback_without_extension_matches(monkeypatch):
    # Without bench._C the evaluators use the pure-Python references: same numbers.
    import bench.metrics.mask as mask_mod
    import bench.ops.region_boxes as rb
    from bench.metrics import MaskEvaluator

    maps = normalize_scoremaps(torch.rand(2, 4, 4), (12, 10))
    gts = [torch.tensor([[1, 2, 6, 9]]), torch.tensor([[0, 0, 4, 4], [5, 5, 9, 11]])]
    masks = (torch.rand(2, 12, 10) < maps).to(torch.uint8)
    fast_b, fast_m = BoxEvaluator(cam_curve_interval=0.01), MaskEvaluator()
    fast_b.accumulate(maps, gts)
    fast_m.accumulate(maps, masks)
    monkeypatch.setattr(rb, "has_op", lambda name: False)
    monkeypatch.setattr(mask_mod, "has_op", lambda name: False)
    slow_b, slow_m = BoxEvaluator(cam_curve_interval=0.01), MaskEvaluator()
    slow_b.accumulate(maps, gts)
    slow_m.accumulate(maps, masks)
    assert fast_b.compute() == slow_b.compute()
    assert fast_m.compute() == slow_m.compute()
