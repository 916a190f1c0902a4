"""Profile "video-step": the cost of one CoLo-CAM training step against one frame-wise CAM
training step on the same frames (target: at most 1.5x on an H100; the reference code pays
~14x, its joint CRF running on the CPU).

"full" is the target's setting on the given device: ResNet50 (random weights), a batch of 32
frames of 224x224 = 8 clips of n = 4 adjacent frames, 10 classes, bf16 autocast on CUDA (the
`paper` budget's precision). "small" is the small CNN on 8 frames of 32x32 on the CPU (seconds,
for tests).

- CAM step: the stage-1 classifier's training step (forward, cross-entropy, backward, SGD).
- CoLo-CAM step: `CoLoCAM.training_loss` on the same frames (frozen classifier forward, CAM
  seeds, decoder forward, partial CE + per-frame CRF + size constraint + joint colour CRF over
  each clip), backward through the decoder, SGD; also without the joint term, to show its share.

Frames are random but photo-like (smooth colour blobs plus noise, `natural_like_images`):
uniform noise would fill the CRF lattices far beyond what real frames do. Each time is the
median of several steps (`time_fn`) after warm-up steps (cuDNN autotuning, lattice buffers)."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from bench.method.seeded import DecoderNet
from bench.models import build_classifier
from bench.profiling import ProfileTable, count_gflop, register_profile, time_fn
from bench.profiling.crf import natural_like_images
from bench.registry import get_method
from bench.method.training import autocast

SETTINGS = {
    # backbone, frames per batch, side, frames per clip, classes, warm-up, repeat
    "full": ("resnet50", 32, 224, 4, 10, 5, 20),
    "small": ("small-cnn", 8, 32, 4, 3, 1, 3),
}


def _sgd(params):
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)


def _step(loss_fn, optimizer, device, mixed: bool):
    def run():
        with autocast(device, mixed):
            out = loss_fn()
        loss = sum(out.values()) if isinstance(out, dict) else out
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run


def _colocam(classifier, side: int, n: int, device, joint: bool):
    cls = get_method("colocam")
    cfg = cls.Config(n_frames=n) if joint else dataclasses.replace(cls.Config(n_frames=n), joint_weight=0.0)
    method = cls(cfg)
    method.dataset = SimpleNamespace(localization_classes=lambda labels: labels)
    method.generator = torch.Generator(device=device).manual_seed(0)
    method.t = 1.0
    net = DecoderNet(classifier, cfg.decoder_widths, side).to(device)
    net.train()
    method.seeder = get_method(cfg.seed_cam)()  # the seed CAM method on the same frozen classifier
    method.seeder.model = net.classifier
    return method, net


@register_profile("video-step")
def profile_video_step(device: torch.device, size: str) -> list[ProfileTable]:
    backbone, batch, side, n, classes, warmup, repeat = SETTINGS[size]
    if batch % n:
        raise ValueError(f"video-step: {batch} frames do not split into clips of {n}")
    mixed = device.type == "cuda"
    torch.manual_seed(0)
    images = (natural_like_images(batch, side, side, device) / 255).contiguous()
    labels = torch.randint(0, classes, (batch,), device=device)
    shot = torch.arange(batch // n, device=device).repeat_interleave(n)  # 8 clips of 4 frames of one shot each

    classifier = build_classifier(backbone, classes).to(device).train()
    cam_step = _step(lambda: F.cross_entropy(classifier(images).logits, labels), _sgd(classifier.parameters()),
                     device, mixed)
    cam_ms = time_fn(cam_step, device, warmup=warmup, repeat=repeat)
    cam_gflop = count_gflop(cam_step)

    rows = [{"step": f"CAM (classifier training, {batch} frames)", "ms": round(cam_ms, 2), "ratio": 1.0,
             "GFLOP": round(cam_gflop, 1), "GFLOP ratio": 1.0}]
    for joint in (True, False):
        frozen = build_classifier(backbone, classes).to(device)
        method, net = _colocam(frozen, side, n, device, joint)
        step = _step(lambda: method.training_loss(net, images, labels, shot=shot), _sgd(net.decoder.parameters()),
                     device, mixed)
        ms = time_fn(step, device, warmup=warmup, repeat=repeat)
        gflop = count_gflop(step)
        what = f"CoLo-CAM ({batch // n} clips of {n} frames)" if joint else "CoLo-CAM without the joint CRF"
        rows.append({"step": what, "ms": round(ms, 2), "ratio": round(ms / cam_ms, 3), "GFLOP": round(gflop, 1),
                     "GFLOP ratio": round(gflop / cam_gflop, 3)})
        del method, net, frozen
    note = (f"{backbone}, random weights, {batch} frames of {side}x{side} (photo-like random frames), {classes} "
            f"classes, autocast {'bf16' if mixed else 'off'}; median of {repeat} steps after {warmup} warm-up "
            f"steps; ratio = step / CAM step (the target for CoLo-CAM: <= 1.5 on an H100); GFLOP: convolutions and "
            f"matrix products of one step (torch.utils.flop_counter), without the CRF ops'")
    return [ProfileTable(f"Video training step on {device.type}", rows, [note])]
