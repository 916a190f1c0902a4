"""Profile "fcam-step": one F-CAM training step (frozen encoder forward, decoder forward and
backward, seeds, losses, SGD step) with the dense CRF on, against the same step with the CRF
switched off (target: at most 1.5x on an H100; the reference code pays ~14x).

"full": ResNet50 (random weights), batch 32 of 224x224, bf16 autocast on CUDA as the `paper`
budget trains; the CRF at F-CAM's default down-scaling and at full resolution. "small": the
small CNN on 8 images of 48x48 (seconds, for tests)."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch

from bench.method.seeded import DecoderNet
from bench.models import build_classifier
from bench.profiling import ProfileTable, count_gflop, register_profile, time_fn
from bench.profiling.crf import natural_like_images
from bench.registry import get_method
from bench.method.training import autocast

SIZES = {"full": ("resnet50", 32, 224, 10), "small": ("small-cnn", 8, 48, 3)}
NUM_CLASSES = 200


def _step_fn(method, net, images, labels, device, amp: bool):
    optimizer = torch.optim.SGD(net.decoder.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def step():
        with autocast(device, amp):
            terms = method.training_loss(net, images, labels)
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


@register_profile("fcam-step")
def profile_fcam_step(device: torch.device, size: str) -> list[ProfileTable]:
    backbone, batch, side, repeat = SIZES[size]
    torch.manual_seed(0)
    classifier = build_classifier(backbone, NUM_CLASSES).to(device)
    # photo-like images (0-1): uniform noise would fill the CRF lattice far beyond what photos do
    images = natural_like_images(batch, side, side, device) / 255
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    cls = get_method("fcam")
    amp = device.type == "cuda"
    variants = [("CRF off", dict(crf_weight=0.0)),
                (f"CRF on (default, scale {cls.Config().crf_scale})", {}),
                ("CRF on, half resolution", dict(crf_scale=0.5))]
    rows, base = [], None
    for label, overrides in variants:
        method = cls(dataclasses.replace(cls.Config(), **overrides))
        method.dataset = SimpleNamespace(localization_classes=lambda y: y, negative_class=None)
        method.generator = torch.Generator(device=device).manual_seed(0)
        method.t = 1.0
        net = DecoderNet(classifier, method.cfg.decoder_widths, side).to(device).train()
        method.seeder = get_method(method.cfg.seed_cam)()  # the seed CAM method on the same frozen classifier
        method.seeder.model = net.classifier
        step = _step_fn(method, net, images, labels, device, amp)
        ms = time_fn(step, device, warmup=3, repeat=repeat)
        gflop = count_gflop(step)
        net.tap.remove()
        base = ms if base is None else base
        rows.append({"step": label, "ms": round(ms, 2), "ratio to CRF off": round(ms / base, 3),
                     "GFLOP": round(gflop, 1)})
    note = (f"{backbone} (random weights, frozen), batch {batch} of {side}x{side} photo-like images, decoder "
            f"{cls.Config().decoder_widths}, autocast {'bf16' if amp else 'off'}; median of {repeat} steps; GFLOP: "
            f"convolutions and matrix products of one step (torch.utils.flop_counter), without the CRF op's")
    return [ProfileTable(f"F-CAM training step on {device.type}", rows, [note])]
