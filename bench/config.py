"""Typed configuration: budgets and training schedules, and the one place that turns
`--set key=value` flags into method and dataset dataclass configs."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field, fields, replace

HASH_IF_SET = "hash_if_set"  # field metadata: see `added_later`


def added_later(default):
    """A dataclass field added after results were committed: `to_jsonable` (and so the
    configuration hash) leaves it out while it holds `default`, which must reproduce the
    behaviour from before the field existed, so the committed cells keep their hashes."""
    return field(default=default, metadata={HASH_IF_SET: True})


@dataclass(frozen=True)
class TrainSchedule:
    """One training run as `bench.method.training.train` runs it: `epochs` epochs of SGD from `lr`,
    annealed to 0 by a cosine over the run's steps (`step_every` None) or multiplied by `gamma`
    every `step_every` epochs (the papers' step decay; the first decay after `step_every`
    epochs)."""

    epochs: int
    lr: float
    weight_decay: float
    step_every: int | None = None
    gamma: float = 0.1

    def __post_init__(self):
        if self.step_every is not None and self.step_every < 1:
            raise ValueError(f"TrainSchedule: step_every must be >= 1 (or None for cosine), got {self.step_every}")


@dataclass(frozen=True)
class ScheduleChanges:
    """A method's own changes to the budget's schedule of its training (None: the budget's), for
    the authors' released schedules (a method's `paper_presets`, e.g. CoLo-CAM's 10 epochs)."""

    epochs: int | None = None
    step_every: int | None = None
    gamma: float | None = None

    def __post_init__(self):
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"ScheduleChanges: epochs must be >= 1, got {self.epochs}")
        if self.step_every is not None and self.step_every < 1:
            raise ValueError(f"ScheduleChanges: step_every must be >= 1, got {self.step_every}")

    def apply(self, schedule: TrainSchedule) -> TrainSchedule:
        changes = {k: v for k, v in (("epochs", self.epochs), ("step_every", self.step_every),
                                     ("gamma", self.gamma)) if v is not None}
        return replace(schedule, **changes) if changes else schedule


@dataclass(frozen=True)
class FineTuneConfig:
    """The settings of a method that fine-tunes the stage-1 classifier with its own training
    (PixelCAM, the localizer methods)."""

    init_from_stage1: bool = True  # start from the cached stage-1 classifier (else from scratch)
    # learning rate = budget.lr * lr_factor: the released configurations fine-tune at 0.001, a
    # tenth of the classifier learning rate of the papers' WSOL protocol (the `paper` budget's 0.01)
    lr_factor: float = 0.1

    def __post_init__(self):
        if self.lr_factor <= 0:
            raise ValueError(f"{type(self).__name__}: lr_factor must be > 0, got {self.lr_factor}")


@dataclass(frozen=True)
class PaperSchedule:
    """A training run as a reference paper published it for a dataset (declared by the dataset
    plugin, taken by the `paper` budget): `epochs` epochs, the learning rate multiplied by `gamma`
    every `step_every` epochs, and the learning rate and weight decay of each backbone they were
    published for (other backbones keep the budget's). The length and the decay are applied to
    every backbone, an assumption: the sources give them in one command per dataset, while the
    protocol of Choe et al. (CVPR 2020) tunes the learning rate per backbone."""

    epochs: int
    step_every: int
    gamma: float = 0.1
    lr: typing.Mapping[str, float] = field(default_factory=dict)  # backbone -> learning rate
    weight_decay: typing.Mapping[str, float] = field(default_factory=dict)  # backbone -> weight decay


# Which checkpoint of a training run is kept (docs/protocol.md, "Model selection"): the last
# epoch's, the one with the best validation localization (the dataset's primary metric) or the
# best validation Top-1 classification.
SELECTION_CRITERIA = ("last", "best-loc", "best-cls")


@dataclass(frozen=True)
class Budget:
    """How much compute a cell gets. Methods read training lengths from here, never from
    their own flags, so the same budget means the same effort for every method."""

    name: str
    stage1: TrainSchedule  # the shared stage-1 CAM classifier's run (and the baselines' that train a classifier)
    method: TrainSchedule  # a method's own training (decoders, localizers)
    batch_size: int
    # the base learning rate: the rate of the runs above unless the paper schedules set theirs, and
    # what the methods that fine-tune at a fraction of it multiply (`lr_factor`)
    lr: float
    momentum: float = 0.9
    max_train_images: int | None = None  # subsets for tests; None = the whole split
    max_eval_images: int | None = None
    input_size: int | None = None  # None: the dataset's own size
    # training images are resized to crop_from and a random input_size crop is taken (the
    # papers' 256 -> 224); None: resized straight to input_size. Evaluation never crops.
    crop_from: int | None = None
    num_workers: int = 0
    mixed_precision: bool = False  # autocast on CUDA only
    # Model selection: runs are validated before training and after every val_every-th epoch (and
    # the last); None: never validated, every run keeps its last epoch. `selection` forces one
    # criterion on every run (None: each method's authors' default, `Method.selection`).
    val_every: int | None = None
    selection: str | None = None

    def __post_init__(self):
        if self.val_every is not None and self.val_every < 1:
            raise ValueError(f"Budget {self.name}: val_every must be >= 1 (or None: no validation), got {self.val_every}")
        if self.selection is not None and self.selection not in SELECTION_CRITERIA:
            raise ValueError(f"Budget {self.name}: selection must be one of {', '.join(SELECTION_CRITERIA)} "
                             f"(or None: each method's default), got {self.selection!r}")

    def criterion(self, default: str) -> str:
        """The checkpoint criterion of a run whose method's default is `default`."""
        if self.val_every is None:
            return "last"
        return self.selection or default

    def stage1_schedule(self) -> TrainSchedule:
        """The run of the stage-1 CAM classifier (and of the baselines that train one)."""
        return self.stage1

    def method_schedule(self, lr: float | None = None) -> TrainSchedule:
        """A method's own training run; `lr` (a method's own rate) replaces the budget's."""
        return self.method if lr is None else replace(self.method, lr=lr)


def make_budget(name: str, stage1_epochs: int, method_epochs: int, batch_size: int, lr: float,
                weight_decay: float = 1e-4, **rest) -> Budget:
    """A budget whose two runs share one rate and weight decay under a cosine schedule."""
    return Budget(name, TrainSchedule(stage1_epochs, lr, weight_decay), TrainSchedule(method_epochs, lr, weight_decay),
                  batch_size=batch_size, lr=lr, **rest)


PAPER_BUDGET = "paper"  # the budget that takes the datasets' published schedules
BUDGETS: dict[str, Budget] = {
    "smoke": make_budget("smoke", stage1_epochs=1, method_epochs=1, batch_size=16, lr=0.05,
                         max_train_images=48, max_eval_images=16),
    # smoke never validates (every run keeps its last epoch); paper validates every epoch, as the
    # reference code does (docs/protocol.md, "Model selection"); quick every second epoch and at
    # the last, and trains 6 + 3 epochs, to keep the default grid within its 30-minute CPU target
    "quick": make_budget("quick", stage1_epochs=6, method_epochs=3, batch_size=32, lr=0.05, val_every=2),
    # The reference papers' settings (Choe et al. 2020 / F-CAM): batch 32, SGD with Nesterov
    # momentum 0.9, weight decay 1e-4, 224 crops; meant for a GPU. These epochs, rates and the
    # cosine schedule hold for datasets without published schedules; `resolve_budget` puts in
    # the others' (their plugins' `paper_stage1` / `paper_method`).
    PAPER_BUDGET: make_budget(PAPER_BUDGET, stage1_epochs=50, method_epochs=20, batch_size=32, lr=0.01,
                              input_size=224, crop_from=256, num_workers=8, mixed_precision=True, val_every=1),
}


def resolve_budget(budget: Budget, dataset, backbone: str) -> Budget:
    """The budget a cell of `dataset` (a plugin instance) on `backbone` trains with. The `paper`
    budget takes the dataset's published schedules (`dataset.paper_stage1` for the CAM
    classifier, `dataset.paper_method` for a method's own training, `PaperSchedule`s) with the
    backbone's learning rate and weight decay where published; every other budget, and a
    dataset without them, is returned unchanged. Resolving a resolved budget changes nothing."""
    if budget.name != PAPER_BUDGET:
        return budget
    changes = {}
    for run in ("stage1", "method"):
        published = getattr(dataset, f"paper_{run}", None)
        if published is not None:
            generic = getattr(budget, run)
            changes[run] = TrainSchedule(published.epochs, published.lr.get(backbone, generic.lr),
                                         published.weight_decay.get(backbone, generic.weight_decay),
                                         published.step_every, published.gamma)
    return replace(budget, **changes) if changes else budget


def get_budget(name: str) -> Budget:
    try:
        return BUDGETS[name]
    except KeyError:
        raise ValueError(f"unknown budget {name!r}; known budgets: {', '.join(BUDGETS)}") from None


def to_jsonable(obj):
    """Plain JSON data of `obj` (dataclasses as dicts, without their `added_later` fields at default)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in fields(obj)
                if not (f.metadata.get(HASH_IF_SET) and getattr(obj, f.name) == f.default)}
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
    """Return a copy of dataclass `cfg` with string `overrides` applied (typed by the fields); a
    dotted key ("seed.fg_mode") sets a field of a nested dataclass config."""
    if not overrides:
        return cfg
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in fields(cfg)}
    nested: dict[str, dict[str, str]] = {}
    changes = {}
    for key, value in overrides.items():
        head, dot, rest = key.partition(".")
        if head not in names:
            raise ValueError(f"{owner} has no setting {key!r}; its settings: {', '.join(setting_names(cfg))}")
        if dot:
            if not dataclasses.is_dataclass(getattr(cfg, head)):
                raise ValueError(f"{owner}.{head} is not a group of settings; its settings: "
                                 f"{', '.join(setting_names(cfg))}")
            nested.setdefault(head, {})[rest] = value
        else:
            if dataclasses.is_dataclass(getattr(cfg, head)):
                raise ValueError(f"{owner}.{head} is a group of settings: set one of "
                                 f"{', '.join(f'{head}.{n}' for n in setting_names(getattr(cfg, head)))}")
            changes[key] = _coerce(value, hints[key], f"{owner}.{key}")
    for head, sub in nested.items():
        changes[head] = apply_overrides(getattr(cfg, head), sub, f"{owner}.{head}")
    return replace(cfg, **changes)


def setting_names(cfg) -> list[str]:
    """The settable keys of a dataclass config, nested groups as dotted paths."""
    out = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out += [f"{f.name}.{n}" for n in setting_names(value)]
        else:
            out.append(f.name)
    return sorted(out)


def paper_preset(method_cls, dataset_name: str, budget_name: str) -> dict[str, str]:
    """The authors' released configuration of `method_cls` for `dataset_name` (its
    `paper_presets` entry, `--set`-style strings) when the budget is `paper`; else {}."""
    if budget_name != PAPER_BUDGET:
        return {}
    return dict(getattr(method_cls, "paper_presets", {}).get(dataset_name, {}))


def method_config(method_cls, dataset_name: str, budget_name: str, overrides: dict[str, str]):
    """A cell's method config: the defaults, the paper preset (`paper_preset`), then `overrides`."""
    merged = {**paper_preset(method_cls, dataset_name, budget_name), **(overrides or {})}
    return apply_overrides(method_cls.Config(), merged, method_cls.name)


def split_setting(text: str) -> tuple[str, str, str] | None:
    """`fcam.crf_weight=1e-9` -> ("fcam", "crf_weight", "1e-9"); `fcam.seed.fg_mode=top` -> ("fcam",
    "seed.fg_mode", "top"): the owner (a method or dataset name, which holds no dot) comes before
    the first dot; None when the text is not OWNER.KEY=VALUE."""
    key, sep, value = text.partition("=")
    owner, dot, name = key.partition(".")
    if not sep or not dot or not owner or not name:
        return None
    return owner, name, value


def parse_set_flags(flags: list[str]) -> dict[str, dict[str, str]]:
    """`--set fcam.crf_weight=1e-9 --set synth-objects.image_size=64` →
    {"fcam": {"crf_weight": "1e-9"}, "synth-objects": {"image_size": "64"}}."""
    out: dict[str, dict[str, str]] = {}
    for flag in flags or []:
        parts = split_setting(flag)
        if parts is None:
            raise ValueError(f"--set {flag!r}: expected OWNER.KEY=VALUE (e.g. cam.cam_layer=features)")
        owner, name, value = parts
        out.setdefault(owner, {})[name] = value
    return out


@dataclass(frozen=True)
class EmptyConfig:
    """For plugins without settings."""


__all__ = ["Budget", "make_budget", "BUDGETS", "SELECTION_CRITERIA", "PAPER_BUDGET", "TrainSchedule", "PaperSchedule",
           "ScheduleChanges", "FineTuneConfig", "resolve_budget", "added_later", "get_budget", "config_hash",
           "apply_overrides", "setting_names", "paper_preset", "method_config", "split_setting", "parse_set_flags",
           "EmptyConfig", "to_jsonable", "field"]
