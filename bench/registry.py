"""Method and dataset registries. Plugins live in `methods/*.py` and `datasets/*.py` at the
repository root (or any folder given by WSOLBENCH_PLUGINS) and are loaded by path, so the
folder name `datasets` never clashes with other installed packages."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

METHODS: dict[str, type] = {}
DATASETS: dict[str, type] = {}

REPO_ROOT = Path(__file__).resolve().parent.parent
_loaded_files: set[Path] = set()


class UnknownNameError(KeyError):
    def __str__(self):  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def register_method(cls):
    return _register(METHODS, cls, "method")


def register_dataset(cls):
    return _register(DATASETS, cls, "dataset")


def _register(table, cls, kind):
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{kind} class {cls.__qualname__} needs a `name` attribute")
    previous = table.get(name)
    if previous is not None and previous.__qualname__ != cls.__qualname__:
        raise ValueError(f"{kind} name {name!r} registered twice: {previous.__module__} and {cls.__module__}")
    cls.source_file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    table[name] = cls
    return cls


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


def _lookup(table, name, kind):
    load_plugins()
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "(none)"
        raise UnknownNameError(f"unknown {kind} {name!r}; known {kind}s: {known}") from None


def get_method(name: str) -> type:
    return _lookup(METHODS, name, "method")


def get_dataset(name: str) -> type:
    return _lookup(DATASETS, name, "dataset")


def all_methods() -> dict[str, type]:
    load_plugins()
    return dict(sorted(METHODS.items()))


def all_datasets() -> dict[str, type]:
    load_plugins()
    return dict(sorted(DATASETS.items()))
