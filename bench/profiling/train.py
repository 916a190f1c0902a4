"""Profile "train": images per second of the harness's stage-1 training (bench.method.training.train over
the real data pipeline: files on disk, loader workers, random crops and flips, pinned copies)
against a bare PyTorch loop over the same model and the same images already on the device.

"full" is the reference papers' setting: the `paper` budget (batch 32, 224 crops from 256, bf16 autocast on
CUDA, 8 loader workers), ResNet50 (random weights), synth-objects generated at 256x256.
"small" is the small CNN on 48x48 images at the smoke budget (seconds, for tests).

The harness's first epoch (worker start-up, PNG decoding into the pixel cache) and the bare
loop's first steps (cuDNN autotuning) are left out of both timings. A harness rate close to the
bare rate means both that the harness adds little per step and that the data pipeline keeps up
with the GPU (the bare loop never waits for data)."""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import get_budget
from bench.models import build_classifier
from bench.profiling import ProfileTable, register_profile
from bench.registry import get_dataset
from bench.method.training import autocast, train

SETTINGS = {
    # backbone, budget, image side on disk, train images per class, times each file is listed,
    # harness epochs (the first one untimed)
    "full": ("resnet50", "paper", 256, 200, 4, 3),
    "small": ("small-cnn", "smoke", 48, 24, 1, 3),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _harness_rate(model, train_set, budget, device, epochs: int) -> tuple[float, int]:
    marks: list[float] = []

    def on_epoch_end(epoch, terms):
        _sync(device)
        marks.append(time.perf_counter())

    run = dataclasses.replace(budget.stage1_schedule(), epochs=epochs)
    train(model, model.parameters(), train_set, budget, device, run, seed=0, on_epoch_end=on_epoch_end, desc="harness")
    steps_per_epoch = len(train_set) // budget.batch_size
    images = (epochs - 1) * steps_per_epoch * budget.batch_size
    return images / (marks[-1] - marks[0]), images


def _bare_rate(model, pixels: torch.Tensor, labels: torch.Tensor, budget, device, steps: int, warmup: int) -> float:
    """pixels: uint8 [N,S,S,3] on the device; the same crop/flip/scale as the data pipeline, on device."""
    run = budget.stage1_schedule()
    optimizer = torch.optim.SGD(model.parameters(), lr=run.lr, momentum=budget.momentum, nesterov=True,
                                weight_decay=run.weight_decay)
    n, side = pixels.shape[0], pixels.shape[1]
    crop = budget.input_size or side
    gen = torch.Generator(device=device).manual_seed(0)
    model.train()
    t0 = None
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        idx = torch.randint(0, n, (budget.batch_size,), device=device, generator=gen)
        top, left = (int(v) for v in torch.randint(0, side - crop + 1, (2,)))
        batch = pixels[idx, top:top + crop, left:left + crop].permute(0, 3, 1, 2).float().div_(255)
        if step % 2:
            batch = batch.flip(-1)
        with autocast(device, budget.mixed_precision):
            loss = F.cross_entropy(model(batch).logits, labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return steps * budget.batch_size / (time.perf_counter() - t0)


@register_profile("train")
def profile_train(device: torch.device, size: str) -> list[ProfileTable]:
    backbone, budget_name, side, per_class, repeat, epochs = SETTINGS[size]
    budget = get_budget(budget_name)
    if size == "small":
        budget = dataclasses.replace(budget, max_train_images=None, input_size=40, crop_from=None)
    if device.type != "cuda":
        budget = dataclasses.replace(budget, num_workers=0)
    dataset_cls = get_dataset("synth-objects")
    dataset = dataset_cls(dataclasses.replace(dataset_cls.Config(), image_size=side, n_train=per_class, n_val=2,
                                              n_test=2))
    with tempfile.TemporaryDirectory(prefix="wsolbench-profile-train-") as tmp:
        root = Path(tmp)
        dataset.prepare(root)
        splits = dataset.splits(root, budget)
        # epochs as long as a real dataset's (CUB: ~190 steps) without generating more images:
        # each file is listed `repeat` times, so epoch boundaries weigh as little as they do there
        splits.train.records = splits.train.records * repeat
        splits.train.labels = splits.train.labels * repeat
        torch.manual_seed(0)
        model = build_classifier(backbone, splits.num_classes).to(device)
        harness, n_timed = _harness_rate(model, splits.train, budget, device, epochs)

        store = splits.train
        stored = [store._load_pixels(i)[0] for i in range(len(store))]
        pixels = torch.from_numpy(np.stack(stored)).to(device)
        labels = torch.tensor(store.labels, device=device)
        torch.manual_seed(0)
        model = build_classifier(backbone, splits.num_classes).to(device)
        steps = n_timed // budget.batch_size
        bare = _bare_rate(model, pixels, labels, budget, device, steps=steps, warmup=max(3, steps // 10))
    rows = [{"loop": "bare PyTorch (images on device)", "images/s": round(bare, 1), "ratio": 1.0},
            {"loop": "harness (bench.method.training.train, loader)", "images/s": round(harness, 1),
             "ratio": round(harness / bare, 3)}]
    crop = f"{budget.input_size} crops from {budget.crop_from}" if budget.crop_from else f"{budget.input_size or side}px"
    note = (f"{backbone}, random weights, `{budget.name}` budget: batch {budget.batch_size}, {crop}, "
            f"autocast {'bf16' if budget.mixed_precision and device.type == 'cuda' else 'off'}, "
            f"{budget.num_workers} loader workers; synth-objects at {side}x{side}, {len(splits.train)} training "
            f"images per epoch ({len(splits.train) // repeat} files listed {repeat} times); {n_timed} images timed in each loop after an untimed first epoch / warm-up")
    return [ProfileTable(f"Stage-1 training throughput on {device.type}", rows, [note])]
