"""Backbones and the CAM classifier built on them.

A backbone is an `nn.Module` mapping images [B,3,H,W] in [0,1] to CAM features [B,C,h,w]
and exposing `out_channels` and `cam_layer` (the module whose output the CAM methods read:
no method hard-codes a layer name). `WSOLNet` adds the global-average-pooling + linear head.
Backbones register with `@register_backbone`; weights come from a local file only."""
from __future__ import annotations

import functools
import hashlib
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
import torch
from torch import nn

from bench.registry import Registry

BACKBONES = Registry("backbone")  # filled when this package is imported (its modules register below)


def register_backbone(name: str):
    def wrap(factory):
        return BACKBONES.register(factory, name)

    return wrap


@dataclass
class ClassifierOutput:
    logits: torch.Tensor  # [B, num_classes]
    features: torch.Tensor  # [B, C, h, w] CAM features


class WSOLNet(nn.Module):
    """Backbone + global average pooling + linear classifier (the CAM architecture)."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(backbone.out_channels, num_classes)
        # ImageNet statistics: inputs arrive in [0,1]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @property
    def cam_layer(self) -> nn.Module:
        return self.backbone.cam_layer

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone((images - self.mean) / self.std)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features.mean(dim=(2, 3)))

    def forward(self, images: torch.Tensor) -> ClassifierOutput:
        features = self.features(images)
        return ClassifierOutput(self.head(features), features)

    def class_weights(self, classes: torch.Tensor) -> torch.Tensor:
        return self.classifier.weight[classes]  # [B, C]

    def cam(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """fc-CAM: the class's linear weights times the feature maps, summed over channels."""
        return torch.einsum("bc,bchw->bhw", self.class_weights(classes), features)


@functools.lru_cache(maxsize=None)
def backbone_fingerprint(backbone: str) -> str:
    """A short hash of the backbone's architecture (its modules' repr: layers, widths, strides),
    in the configuration hashes: entries and cached classifiers of an earlier architecture under
    the same name are never resumed or loaded. Once per process and backbone."""
    # built on the CPU: under torch.device("meta") every call goes through a function mode and
    # ResNet50's construction takes 2.2 s instead of 0.5 s; its initialisation draws nothing
    # from the caller's random state
    with torch.random.fork_rng(devices=[]):
        text = repr(BACKBONES.get_or_raise(backbone)())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_classifier(backbone: str, num_classes: int, weights: str | Path | None = None) -> WSOLNet:
    factory = BACKBONES.get_or_raise(backbone)
    net = WSOLNet(factory(), num_classes)
    if weights is not None:
        load_backbone_weights(net.backbone, weights)
    return net


def load_backbone_weights(module: nn.Module, path: str | Path) -> None:
    """Strictly load a state dict from a local file (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(err))
        detail = detail.group(1).strip() if detail else (str(err).strip().splitlines() or [""])[0]
        if "Unsupported global" in detail:  # weights_only refuses every pickled object but tensors and containers
            raise ValueError(f"--weights {path}: refused, it holds a pickled object that is not a tensor "
                             f"({detail.split(' was not')[0]}); only state dicts are loaded (weights_only=True)") from None
        raise ValueError(f"--weights {path}: not a PyTorch checkpoint (expected a state dict saved with "
                         f"torch.save; {detail})") from None
    except Exception as err:  # torch.load raises KeyError, RuntimeError, EOFError... on a file that is no checkpoint
        raise ValueError(f"--weights {path}: not a PyTorch checkpoint (expected a state dict saved with "
                         f"torch.save; {type(err).__name__}: {err})") from None
    for wrapper in ("model", "state_dict"):  # DeiT / timm and training checkpoints wrap the state dict
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in state.items())):
        raise ValueError(f"--weights {path}: expected a state dict (parameter names to tensors), got "
                         f"{type(state).__name__}")
    if hasattr(module, "convert_state_dict"):
        state = module.convert_state_dict(state)
    # checkpoints saved before PyTorch 0.4.1 (torchvision's first ResNet-50 and Inception-v3
    # files) lack BatchNorm's step counters, which play no part in the forward pass
    own = module.state_dict()
    state = {**{k: own[k] for k in own if k.endswith(".num_batches_tracked")}, **state}
    problem = state_dict_mismatch(module, state)
    if problem:
        raise ValueError(f"{path}: weights do not match the backbone; {problem}")
    module.load_state_dict(state, strict=True)


def state_dict_mismatch(module: nn.Module, state: dict) -> str | None:
    """None when `state` has exactly the module's keys and shapes, else a message naming the
    first bad key (in the module's order) and listing the missing, unexpected and mis-shaped ones."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]
    if not (missing or unexpected or wrong):
        return None
    why = {**{k: "missing" for k in missing}, **{k: "wrong shape" for k in wrong}}
    first = next((k for k in own if k in why), None) or unexpected[0]
    shapes = [f"{k} {tuple(getattr(state[k], 'shape', ()))} (backbone {tuple(own[k].shape)})" for k in wrong]

    def listed(keys):
        return "none" if not keys else (str(keys) if len(keys) <= 5 else f"{keys[:5]} ... ({len(keys)} in all)")

    return (f"first bad key {first!r} ({why.get(first, 'unexpected')}); missing keys: {listed(missing)}; "
            f"unexpected keys: {listed(unexpected)}; wrong shapes: {listed(shapes)}")


# Files a weights folder may hold for each backbone, in order of preference: torchvision's
# checkpoint names (both ResNet-50 releases), then `<backbone>.pth`. The papers start every
# backbone from ImageNet weights (docs/protocol.md, "Backbones").
WEIGHT_FILES: dict[str, tuple[str, ...]] = {
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth", "resnet50-11ad3fa6.pth"),
    "vgg16": ("vgg16-397923af.pth",),
    "inceptionv3": ("inception_v3_google-0cc3c7bd.pth", "inception_v3_google-1a9a5a14.pth"),
}


def weight_file_names(backbone: str) -> tuple[str, ...]:
    return WEIGHT_FILES.get(backbone, ()) + (f"{backbone}.pth",)


def find_weights(backbone: str, weights_dir: str | Path | None) -> Path | None:
    """The weights file for `backbone` in `weights_dir` (see `WEIGHT_FILES`), or None."""
    if weights_dir is None:
        return None
    folder = Path(weights_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"weights folder {folder} does not exist (--weights-dir / $WSOLBENCH_WEIGHTS)")
    return next((folder / n for n in weight_file_names(backbone) if (folder / n).is_file()), None)


def check_weights(weights_dir: str | Path, backbones: list[str] | None = None) -> tuple[list[str], int]:
    """(report lines, number of bad files) for a weights folder: per backbone the file found
    and whether it loads into the backbone (keys and shapes), or that none is there. Files in
    the folder that no backbone would use are listed too."""
    folder = Path(weights_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"weights folder {folder} does not exist (--weights-dir / $WSOLBENCH_WEIGHTS)")
    names = backbones or [n for n in BACKBONES if n in WEIGHT_FILES]
    lines, bad, used = [], 0, set()
    for name in names:
        factory = BACKBONES.get_or_raise(name)
        path = find_weights(name, folder)
        if path is None:
            lines.append(f"{name}: missing (looked for {', '.join(weight_file_names(name))})")
            continue
        used.add(path.name)
        try:
            load_backbone_weights(factory(), path)
        except Exception as err:  # a bad file of any kind is reported, the others still checked
            bad += 1
            lines.append(f"{name}: BAD {path.name}: {err}")
        else:
            lines.append(f"{name}: ok {path.name}")
    known = {n for b in BACKBONES for n in weight_file_names(b)}
    for extra in sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in used):
        lines.append(f"(not used: {extra}{'' if extra in known else ' - no backbone reads this name'})")
    return lines, bad


def resolve_weights(backbone: str, weights: str | Path | None, weights_dir: str | Path | None) -> Path | None:
    """The file a run's backbone starts from: `weights` when given, else the folder's file for
    the backbone, else None (random initialisation)."""
    if weights is not None:
        return Path(weights)
    return find_weights(backbone, weights_dir)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """A small VGG-like network for CPU budgets: stride-4 CAM features."""

    def __init__(self, widths=(16, 32, 64, 128)):
        super().__init__()
        w1, w2, w3, w4 = widths
        # the first two convolutions downsample by stride 2 (not full-resolution convolutions
        # followed by max pooling): a training step is ~1.5x faster on CPU, at the same stride
        self.body = nn.Sequential(
            _conv_bn(3, w1, stride=2),
            _conv_bn(w1, w2, stride=2),
            _conv_bn(w2, w3), _conv_bn(w3, w4),
        )
        self.out_channels = w4
        # decoders on this encoder (F-CAM & co.) scale the papers' widths, meant for 512-2048
        # channel encoders, down to the size of this one
        self.decoder_width_scale = 1 / 16
        # channels-last: oneDNN's convolutions run faster on CPU in this layout (measured with
        # the earlier max-pooling layers: ~2x forward, ~1.3x per training step); the features
        # come out channels-last and the layers after them (decoders) keep it
        self.to(memory_format=torch.channels_last)

    @property
    def cam_layer(self) -> nn.Module:
        return self.body[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.contiguous(memory_format=torch.channels_last))


register_backbone("small-cnn")(SmallCNN)

# The full-size WSOL backbones (torchvision state-dict layout); imported last: they register
# themselves with `register_backbone` defined above.
from bench.models import inception, resnet, vgg, vit  # noqa: E402,F401
