"""Profile "cams": every registered post-hoc CAM method on one batch of images, in one table
(ms per image). "full" is the target's setting: ResNet50 (random weights), 256 images of
224x224; "small" uses the small CNN on a few 64x64 images (seconds, for tests).

A method whose cost grows with the channel count (ScoreCAM: one masked forward per channel,
2048 on ResNet50) would take many minutes on all images; every method is first timed on one
batch, and one whose full run would exceed TIME_BUDGET_S is timed on fewer images (whole
batches), which the table says. The per-image figure is what the target is stated in either way."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from bench.method import PostHocCAM
from bench.models import build_classifier
from bench.profiling import ProfileTable, count_gflop, register_profile, time_fn
from bench.registry import all_methods

SIZES = {"full": ("resnet50", 256, 224, 64), "small": ("small-cnn", 8, 64, 8)}
NUM_CLASSES = 200  # CUB's head
TIME_BUDGET_S = 15.0  # wall time allowed per method for warm-up + timed repeats


@register_profile("cams")
def profile_cams(device: torch.device, size: str) -> list[ProfileTable]:
    backbone, n_images, side, batch = SIZES[size]
    torch.manual_seed(0)
    model = build_classifier(backbone, NUM_CLASSES).to(device).eval()
    images = torch.rand(n_images, 3, side, side, device=device)
    labels = torch.randint(0, NUM_CLASSES, (n_images,), device=device)
    ctx = SimpleNamespace(classifier=lambda checkpoint="last": model)
    reps = dict(warmup=1, repeat=3 if size == "full" else 2)
    rows = []
    for name, cls in all_methods().items():
        if not issubclass(cls, PostHocCAM):
            continue
        method = cls()
        method.fit(None, None, ctx)

        def run_on(n):
            def run():
                for start in range(0, n, batch):
                    method.localize(images[start:start + batch], labels[start:start + batch])
            return run

        probe_ms = time_fn(run_on(batch), device, warmup=1, repeat=1)
        runs = reps["warmup"] + reps["repeat"]
        affordable = int(TIME_BUDGET_S * 1e3 / max(probe_ms / batch * runs, 1e-9))
        n_timed = max(batch, min(n_images, affordable // batch * batch))
        ms = time_fn(run_on(n_timed), device, **reps)
        gflop = count_gflop(lambda: method.localize(images[:1], labels[:1]))  # one image
        row = {"method": name, "ms per image": round(ms / n_timed, 3), "images timed": n_timed,
               "total ms": round(ms, 1), "GFLOP per image": round(gflop, 3),
               "TFLOP/s": round(gflop / (ms / n_timed), 3)}
        if device.type == "cuda" and method.cuda_trunk_dtype is not None:
            # the same images in float32 throughout, side by side in this run
            method.cuda_trunk_dtype = None
            ms32 = time_fn(run_on(n_timed), device, **reps)
            row.update({"ms per image (float32)": round(ms32 / n_timed, 3), "float32 / default": round(ms32 / ms, 2)})
        rows.append(row)
    note = (f"{backbone}, {n_images} images of {side}x{side}, batches of {batch}, random weights, "
            f"{NUM_CLASSES} classes; median of {reps['repeat']} runs after {reps['warmup']} warm-up")
    notes = [note, "GFLOP: convolutions and matrix products of one image (torch.utils.flop_counter); "
                   "TFLOP/s = GFLOP per image / ms per image. The 2 ms per image target needs GFLOP / 2 TFLOP/s"]
    if device.type == "cuda":
        notes.append(f"default: the trunk below the CAM layer in {PostHocCAM.cuda_trunk_dtype} "
                     "(PostHocCAM.cuda_trunk_dtype), the CAM layer's output and everything after it in float32")
    return [ProfileTable(f"Post-hoc CAMs on {device.type}", rows, notes)]
