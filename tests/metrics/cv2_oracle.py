"""The reference evaluator's box semantics, written with OpenCV (test oracle only)."""
import numpy as np

cv2 = __import__("pytest").importorskip("cv2")


def cv2_boxes(fg: np.ndarray):
    """(largest-contour box, all contour boxes) of a bool map, the reference's way."""
    H, W = fg.shape
    contours = cv2.findContours(fg.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return (0, 0, 0, 0), [(0, 0, 0, 0)]

    def box(c):
        x, y, w, h = cv2.boundingRect(c)
        return (x, y, min(x + w, W - 1), min(y + h, H - 1))

    return box(max(contours, key=cv2.contourArea)), [box(c) for c in contours]


def iou(box, gt: np.ndarray) -> np.ndarray:
    ix0, iy0 = np.maximum(box[0], gt[:, 0]), np.maximum(box[1], gt[:, 1])
    ix1, iy1 = np.minimum(box[2], gt[:, 2]), np.minimum(box[3], gt[:, 3])
    inter = np.maximum(0.0, ix1 - ix0 + 1.0) * np.maximum(0.0, iy1 - iy0 + 1.0)
    a = (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
    b = (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0)
    return inter / (a + b - inter)


def cv2_levels(q: np.ndarray, gt: np.ndarray, deltas):
    """bool [T, 256] V1 and V2 correctness for one uint8 map, one cv2 call per level."""
    v1 = np.zeros((len(deltas), 256), bool)
    v2 = np.zeros((len(deltas), 256), bool)
    for k in range(256):
        b1, bs = cv2_boxes(q > k)
        s1 = iou(b1, gt).max()
        s2 = max(iou(b, gt).max() for b in bs)
        for t, d in enumerate(deltas):
            v1[t, k], v2[t, k] = s1 >= d, s2 >= d
    return v1, v2


def smooth_map(rng, H, W, cell=3):
    x = rng.random((H // cell + 2, W // cell + 2)).astype(np.float32)
    x = cv2.resize(x, (W, H), interpolation=cv2.INTER_LINEAR)
    x = (x - x.min()) / (x.max() - x.min())
    return (x * 255).astype(np.uint8)
