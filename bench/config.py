"""Typed configuration: budgets, and the one place that turns `--set key=value` flags into
method and dataset dataclass configs."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field, fields, replace


@dataclass(frozen=True)
class Budget:
    """How much compute a cell gets. Methods read training lengths from here, never from
    their own flags, so the same budget means the same effort for every method."""

    name: str
    stage1_epochs: int  # epochs of the shared stage-1 CAM classifier
    method_epochs: int  # epochs of a method's own training (decoders, WSOL baselines)
    batch_size: int
    lr: float  # stage-1 / baseline classifier learning rate (SGD)
    weight_decay: float = 1e-4
    momentum: float = 0.9
    max_train_images: int | None = None  # subsets for tests; None = the whole split
    max_eval_images: int | None = None
    input_size: int | None = None  # None: the dataset's own size
    # training images are resized to crop_from and a random input_size crop is taken (the
    # papers' 256 -> 224); None: resized straight to input_size. Evaluation never crops.
    crop_from: int | None = None
    num_workers: int = 0
    mixed_precision: bool = False  # autocast on CUDA only


BUDGETS: dict[str, Budget] = {
    "smoke": Budget("smoke", stage1_epochs=1, method_epochs=1, batch_size=16, lr=0.05,
                    max_train_images=48, max_eval_images=16),
    "quick": Budget("quick", stage1_epochs=8, method_epochs=4, batch_size=32, lr=0.05),
    # The reference papers' settings (Choe et al. 2020 / F-CAM): batch 32, SGD with Nesterov
    # momentum 0.9, weight decay 1e-4, 224 crops; meant for a GPU.
    "paper": Budget("paper", stage1_epochs=50, method_epochs=20, batch_size=32, lr=0.01,
                    input_size=224, crop_from=256, num_workers=8, mixed_precision=True),
}


def get_budget(name: str) -> Budget:
    try:
        return BUDGETS[name]
    except KeyError:
        raise ValueError(f"unknown budget {name!r}; known budgets: {', '.join(BUDGETS)}") from None


def to_jsonable(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    return obj


def config_hash(obj) -> str:
    """Stable short hash of a JSON-able (or dataclass) configuration."""
    text = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _coerce(value: str, annotation, where: str):
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        if value.lower() in ("none", "null"):
            return None
        return _coerce(value, args[0], where)
    if origin in (tuple, list):
        inner = args[0] if args else str
        items = tuple(_coerce(v, inner, where) for v in value.split(",") if v != "")
        return items if origin is tuple else list(items)
    if annotation is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: expected a boolean, got {value!r}")
    try:
        return annotation(value)
    except Exception:
        raise ValueError(f"{where}: cannot read {value!r} as {getattr(annotation, '__name__', annotation)}") from None


def apply_overrides(cfg, overrides: dict[str, str], owner: str):
    """Return a copy of dataclass `cfg` with string `overrides` applied (typed by the fields)."""
    if not overrides:
        return cfg
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in fields(cfg)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ValueError(f"{owner} has no setting {key!r}; its settings: {', '.join(sorted(names))}")
        changes[key] = _coerce(value, hints[key], f"{owner}.{key}")
    return replace(cfg, **changes)


def parse_set_flags(flags: list[str]) -> dict[str, dict[str, str]]:
    """`--set fcam.crf_weight=1e-9 --set synth-objects.image_size=64` →
    {"fcam": {"crf_weight": "1e-9"}, "synth-objects": {"image_size": "64"}}."""
    out: dict[str, dict[str, str]] = {}
    for flag in flags or []:
        key, sep, value = flag.partition("=")
        owner, dot, name = key.rpartition(".")
        if not sep or not dot or not owner or not name:
            raise ValueError(f"--set {flag!r}: expected OWNER.KEY=VALUE (e.g. cam.cam_layer=features)")
        out.setdefault(owner, {})[name] = value
    return out


@dataclass(frozen=True)
class EmptyConfig:
    """For plugins without settings."""


__all__ = ["Budget", "BUDGETS", "get_budget", "config_hash", "apply_overrides", "parse_set_flags",
           "EmptyConfig", "to_jsonable", "field"]
