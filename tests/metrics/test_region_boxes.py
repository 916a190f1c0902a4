"""region_boxes op: against OpenCV (the reference's own calls) per level, and the compiled op
against the pure-Python reference."""
import numpy as np
import pytest
import torch

from bench._ext import has_op
from bench.ops.region_boxes import contour_area, level_boxes, pack_boxes, region_boxes, region_boxes_reference
from tests.metrics.cv2_oracle import cv2, cv2_boxes, cv2_levels, smooth_map

DELTAS = [0.3, 0.5, 0.7]
needs_op = pytest.mark.skipif(not has_op("region_boxes"), reason="bench._C not built")


def _random_gt(rng, H, W, m):
    out = []
    for _ in range(m):
        x0, x1 = sorted(rng.integers(0, W, 2))
        y0, y1 = sorted(rng.integers(0, H, 2))
        out.append([x0, y0, x1, y1])
    return np.array(out, dtype=np.float64)


def _maps(seed, n):
    """Smooth maps of several sizes (regions touching the border, holes) and coarse noise
    (many ties, holes, nested regions)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        H, W = (int(v) for v in rng.integers(3, 28, 2))
        if i % 2 == 0:
            q = smooth_map(rng, H, W, cell=int(rng.integers(2, 5)))
        else:
            levels = int(rng.integers(2, 10))
            q = (rng.integers(0, levels, (H, W)) * (255 // (levels - 1))).astype(np.uint8)
        yield q, _random_gt(rng, H, W, int(rng.integers(1, 3)))


def test_reference_boxes_match_cv2_per_level():
    # Box sets (V2, as multisets) and the largest-contour box (V1, with cv2's tie order).
    rng = np.random.default_rng(0)
    n = 0
    for H, W in [(5, 7), (12, 12), (20, 15), (9, 31)]:
        for _ in range(4):
            q = smooth_map(rng, H, W)
            for k in range(0, 256, 3):
                fg = q > k
                a1, a2 = cv2_boxes(fg)
                r1, r2 = level_boxes(fg)
                assert sorted(a2) == sorted(r2), (k, q)
                assert a1 == r1, (k, q)
                n += 1
    assert n > 300


def test_contour_area_matches_cv2():
    rng = np.random.default_rng(1)
    from skimage.measure import label, regionprops
    for _ in range(40):
        fg = rng.random((9, 11)) < 0.55
        # RETR_CCOMP: contours without a parent are the outer borders (nested ones included)
        contours, hier = cv2.findContours(fg.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        want = sorted(cv2.contourArea(c) for c, h in zip(contours, hier[0]) if h[3] == -1)
        got = sorted(contour_area(fg, int(r.coords[0][1]), int(r.coords[0][0]))
                     for r in regionprops(label(fg, connectivity=2)))
        assert got == want


@needs_op
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_op_matches_cv2_exactly(seed):
    # V2 must agree exactly. V1 too: ties in contour area are broken like cv2 + max() (the
    # region whose first raster pixel comes last wins); no disagreement has been observed.
    v1_bad = 0
    for q, gt in _maps(seed, 40):
        w1, w2 = cv2_levels(q, gt, DELTAS)
        a1, a2 = torch.ops.wsolbench.region_boxes(torch.from_numpy(q[None]), torch.from_numpy(gt),
                                                  torch.tensor([0, len(gt)]), DELTAS, True)
        np.testing.assert_array_equal(a2[0].numpy(), w2)
        v1_bad += int((a1[0].numpy() != w1).any())
    assert v1_bad == 0, f"V1 differs from cv2 on {v1_bad} maps"


@needs_op
def test_op_matches_reference_batched():
    rng = np.random.default_rng(5)
    H, W = 15, 18
    q = torch.from_numpy(np.stack([smooth_map(rng, H, W) for _ in range(5)]))
    gts = [torch.from_numpy(_random_gt(rng, H, W, m)) for m in (1, 2, 3, 1, 2)]
    flat, off = pack_boxes(gts)
    a = torch.ops.wsolbench.region_boxes(q, flat, off, DELTAS, True)
    b = region_boxes_reference(q, flat, off, DELTAS, True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # largest=False: V2 unchanged
    c = region_boxes(q, flat, off, DELTAS, largest=False)
    assert torch.equal(c[1], a[1])


@needs_op
def test_op_large_smooth_map_matches_cv2():
    rng = np.random.default_rng(7)
    q = smooth_map(rng, 64, 80, cell=8)
    gt = np.array([[10, 12, 40, 50], [50, 5, 79, 63]], dtype=np.float64)
    w1, w2 = cv2_levels(q, gt, DELTAS)
    a1, a2 = torch.ops.wsolbench.region_boxes(torch.from_numpy(q[None]), torch.from_numpy(gt),
                                              torch.tensor([0, 2]), DELTAS, True)
    np.testing.assert_array_equal(a2[0].numpy(), w2)
    np.testing.assert_array_equal(a1[0].numpy(), w1)


def test_op_bad_inputs():
    with pytest.raises(TypeError):
        region_boxes(torch.zeros(1, 4, 4), torch.zeros(1, 4), torch.tensor([0, 1]), DELTAS)
    if has_op("region_boxes"):
        with pytest.raises(RuntimeError):
            torch.ops.wsolbench.region_boxes(torch.zeros(2, 4, 4, dtype=torch.uint8),
                                             torch.zeros(1, 4, dtype=torch.float64),
                                             torch.tensor([0, 1]), DELTAS, True)


@needs_op
def test_opcheck():
    import bench.metrics.mask  # noqa: F401  (registers the fake kernels)

    q = torch.from_numpy(smooth_map(np.random.default_rng(0), 9, 11)[None].repeat(2, 0))
    flat, off = pack_boxes([torch.tensor([[1, 1, 5, 6]]), torch.tensor([[0, 0, 3, 3], [2, 2, 9, 8]])])
    torch.library.opcheck(torch.ops.wsolbench.region_boxes.default, (q, flat, off, DELTAS, True))
    s = torch.rand(50)
    m = torch.randint(0, 2, (50,), dtype=torch.uint8)
    edges = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 2.0, 3.0])
    torch.library.opcheck(torch.ops.wsolbench.mask_histogram.default, (s, m, edges, 0.25))
