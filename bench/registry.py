"""The one registry mechanism: methods, datasets, backbones and profiles are each a `Registry`
(a name -> object table filled by a decorator, with the same errors for unknown names).

Method and dataset plugins live in `methods/*.py` and `datasets/*.py` at the repository root
(or any folder given by WSOLBENCH_PLUGINS) and are loaded by path, so the folder name
`datasets` never clashes with other installed packages. Loading a plugin file runs its code."""
from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_loaded_files: set[Path] = set()


class UnknownNameError(KeyError, ValueError):  # a ValueError too: callers that catch bad arguments catch it
    def __str__(self):  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class Registry(Mapping):
    """Registered objects by name. `load` (called before every lookup) imports whatever
    registers into this table (plugin files, the backbone or profile modules)."""

    def __init__(self, kind: str, load: Callable[[], None] | None = None):
        self.kind, self._load, self._table = kind, load, {}

    def register(self, obj, name: str | None = None):
        name = name or getattr(obj, "name", None)
        if not name:
            raise TypeError(f"{self.kind} {getattr(obj, '__qualname__', obj)!r} needs a `name`")
        if "." in name or "=" in name or "," in name:  # `--set NAME.KEY=VALUE` and lists read names
            raise ValueError(f"{self.kind} name {name!r}: no '.', '=' or ',' allowed")
        previous = self._table.get(name)
        if previous is not None and getattr(previous, "__qualname__", None) != getattr(obj, "__qualname__", None):
            raise ValueError(f"{self.kind} name {name!r} registered twice: {getattr(previous, '__module__', '?')} and "
                             f"{getattr(obj, '__module__', '?')}")
        if isinstance(obj, type) and "source_file" not in vars(obj):  # the plugin file, hashed into entries
            obj.source_file = getattr(sys.modules.get(obj.__module__), "__file__", None)
        self._table[name] = obj
        return obj

    def unregister(self, name: str) -> None:
        self._table.pop(name, None)

    def loaded(self) -> "Registry":
        if self._load is not None:
            self._load()
        return self

    def get_or_raise(self, name: str):
        self.loaded()
        try:
            return self._table[name]
        except KeyError:
            known = ", ".join(sorted(self._table)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def all(self) -> dict:
        self.loaded()
        return dict(sorted(self._table.items()))

    # Mapping over what is registered now (no loading: the decorators read it while loading)
    def __getitem__(self, name: str):
        return self._table[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


def plugin_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("WSOLBENCH_PLUGINS", "").split(os.pathsep) if p]
    return [REPO_ROOT / "methods", REPO_ROOT / "datasets", *extra]


def load_plugin_file(path: Path) -> None:
    """Import one plugin file by path (idempotent)."""
    path = Path(path).resolve()
    if path in _loaded_files:
        return
    module_name = f"wsolbench_plugins.{path.parent.name}.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    _loaded_files.add(path)
    try:
        spec.loader.exec_module(module)
    except Exception:
        _loaded_files.discard(path)
        sys.modules.pop(module_name, None)
        raise


def load_plugins() -> None:
    for folder in plugin_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.py")):
                if not path.name.startswith("_"):
                    load_plugin_file(path)


METHODS = Registry("method", load_plugins)
DATASETS = Registry("dataset", load_plugins)


def register_method(cls):
    return METHODS.register(cls)


def register_dataset(cls):
    return DATASETS.register(cls)


def get_method(name: str) -> type:
    return METHODS.get_or_raise(name)


def get_dataset(name: str) -> type:
    return DATASETS.get_or_raise(name)


def all_methods() -> dict[str, type]:
    return METHODS.all()


def all_datasets() -> dict[str, type]:
    return DATASETS.all()
