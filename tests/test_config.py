"""`--set` on nested configs, the budget's two runs, one registry's rules."""
from dataclasses import dataclass, field

import pytest

from bench.config import BUDGETS, TrainSchedule, apply_overrides, parse_set_flags, setting_names, split_setting
from bench.registry import Registry


@dataclass(frozen=True)
class Inner:
    fg_mode: str = "uniform"
    n_fg: int = 1


@dataclass(frozen=True)
class Outer:
    seed: Inner = field(default_factory=Inner)
    crf_weight: float = 2e-9


def test_dotted_keys_set_fields_of_nested_configs():
    cfg = apply_overrides(Outer(), {"seed.fg_mode": "top", "seed.n_fg": "3", "crf_weight": "0"}, "fcam")
    assert cfg == Outer(Inner("top", 3), 0.0)
    assert setting_names(Outer()) == ["crf_weight", "seed.fg_mode", "seed.n_fg"]


def test_bad_keys_name_the_valid_ones():
    with pytest.raises(ValueError, match=r"fcam has no setting 'sed.n_fg'; its settings: crf_weight, seed.fg_mode, seed.n_fg"):
        apply_overrides(Outer(), {"sed.n_fg": "2"}, "fcam")
    with pytest.raises(ValueError, match=r"fcam.seed has no setting 'n_bg'"):
        apply_overrides(Outer(), {"seed.n_bg": "2"}, "fcam")
    with pytest.raises(ValueError, match=r"fcam.seed is a group of settings: set one of seed.fg_mode, seed.n_fg"):
        apply_overrides(Outer(), {"seed": "2"}, "fcam")
    with pytest.raises(ValueError, match=r"fcam.crf_weight is not a group of settings"):
        apply_overrides(Outer(), {"crf_weight.x": "2"}, "fcam")


def test_set_flags_split_the_owner_at_the_first_dot():
    assert split_setting("fcam.seed.fg_mode=top") == ("fcam", "seed.fg_mode", "top")
    assert split_setting("synth-objects.n_train=12") == ("synth-objects", "n_train", "12")
    assert split_setting("fcam=1") is None and split_setting("fcam.x") is None
    assert parse_set_flags(["fcam.seed.n_fg=2", "fcam.crf_weight=0"]) == {"fcam": {"seed.n_fg": "2", "crf_weight": "0"}}


def test_budgets_hold_their_two_runs():
    quick = BUDGETS["quick"]
    assert quick.stage1_schedule() == quick.stage1 == TrainSchedule(6, 0.05, 1e-4)
    assert quick.method_schedule() == TrainSchedule(3, 0.05, 1e-4)
    assert quick.method_schedule(lr=0.1) == TrainSchedule(3, 0.1, 1e-4)
    assert quick.val_every == 2


def test_registered_names_cannot_hold_the_set_flag_separators():
    class Dotted:
        name = "a.b"

    with pytest.raises(ValueError, match="no '.', '=' or ','"):
        Registry("method").register(Dotted)
