"""Profile of the evaluators: box accuracy at every CAM threshold (region_boxes op: V2 alone,
V1 + V2) and PxAP histograms, on smooth random CAMs (low-resolution noise upsampled, like real
CAMs). "full": 5,000 CAMs of 224x224 over 1,000 thresholds; "small": 64 CAMs."""
from __future__ import annotations

import os
import time

import torch

from bench.profiling import ProfileTable, register_profile


def _data(n: int, size: int = 224, seed: int = 0):
    from bench.metrics import normalize_scoremaps

    g = torch.Generator().manual_seed(seed)
    cams = normalize_scoremaps(torch.rand(n, 14, 14, generator=g), (size, size))
    masks = (torch.rand(n, size, size, generator=g) < cams).to(torch.uint8)
    masks[:, :4] = 255  # a band of ignore pixels
    lo = torch.randint(0, size // 2, (n, 2), generator=g)
    hi = lo + torch.randint(8, size // 2, (n, 2), generator=g)
    boxes = [torch.cat([lo[i], hi[i]])[None] for i in range(n)]
    return cams, masks, boxes


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def run_metrics(n: int, batch: int = 250, interval: float = 0.001, largest: bool = False) -> dict:
    """Wall and CPU seconds to evaluate n CAMs: boxes (V2 only, or V1 + V2) and PxAP."""
    from bench.metrics import MaskEvaluator
    from bench.metrics.common import quantize
    from bench.ops.region_boxes import pack_boxes, region_boxes

    cams, masks, boxes = _data(n)
    mask_ev = MaskEvaluator(interval)

    def boxes_v2():
        for i in range(0, n, batch):
            flat, off = pack_boxes(boxes[i:i + batch])
            region_boxes(quantize(cams[i:i + batch]), flat, off, (0.3, 0.5, 0.7), largest=largest)

    def pxap():
        for i in range(0, n, batch):
            mask_ev.accumulate(cams[i:i + batch], masks[i:i + batch])
        mask_ev.compute()

    (bw, bc), (mw, mc) = _timed(boxes_v2), _timed(pxap)
    return {"boxes_s": bw, "boxes_cpu_s": bc, "pxap_s": mw, "pxap_cpu_s": mc, "total_s": bw + mw}


def run_box_evaluator(n: int, batch: int = 250) -> tuple[float, float]:
    from bench.metrics import BoxEvaluator

    cams, _, boxes = _data(n)
    ev = BoxEvaluator()

    def go():
        for i in range(0, n, batch):
            ev.accumulate(cams[i:i + batch], boxes[i:i + batch])
        ev.compute()

    return _timed(go)


def run_mask_evaluator(n: int, batch: int = 250) -> tuple[float, float]:
    from bench.metrics import MaskEvaluator

    cams, masks, _ = _data(n)
    ev = MaskEvaluator()

    def go():
        for i in range(0, n, batch):
            ev.accumulate(cams[i:i + batch], masks[i:i + batch])
        ev.compute()

    return _timed(go)


@register_profile("metrics")
def profile_metrics(device: torch.device, size: str) -> list[ProfileTable]:
    n = 5000 if size == "full" else 64
    rows = []
    for largest in (False, True):
        r = run_metrics(n, largest=largest)
        rows.append({"boxes": "V1+V2" if largest else "V2", "maps": n, "HxW": "224x224",
                     "thresholds": 1000, "boxes s": round(r["boxes_s"], 2),
                     "PxAP s": round(r["pxap_s"], 2), "total s": round(r["total_s"], 2),
                     "CPU s": round(r["boxes_cpu_s"] + r["pxap_cpu_s"], 2)})
    # End to end through the evaluators (input validation, quantisation, V1 + V2, PxAP).
    box_s, box_cpu = run_box_evaluator(n)
    mask_s, mask_cpu = run_mask_evaluator(n)
    rows.append({"boxes": "BoxEvaluator + MaskEvaluator", "maps": n, "HxW": "224x224",
                 "thresholds": 1000, "boxes s": round(box_s, 2), "PxAP s": round(mask_s, 2),
                 "total s": round(box_s + mask_s, 2), "CPU s": round(box_cpu + mask_cpu, 2)})
    notes = [f"CPU only (the evaluators run on CPU whatever `device` is); torch threads "
             f"{torch.get_num_threads()}, os.cpu_count() {os.cpu_count()}, load average "
             f"{os.getloadavg()[0]:.1f} at the end.",
             "Budget: 5,000 CAMs, boxes V2 + PxAP, under 30 s on 2 cores.",
             "CPU s = process CPU time over all threads (wall time is inflated when other "
             "processes share the cores)."]
    return [ProfileTable(title="WSOL evaluators (region_boxes + PxAP histogram)", rows=rows, notes=notes)]
