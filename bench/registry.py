"""Method and dataset registries. Plugins live in `methods/*.py` and `datasets/*.py` at the
repository root (or any folder given by WSOLBENCH_PLUGINS) and are loaded by path, so the
folder name `datasets` never clashes with other installed packages.

Loading a plugin imports it: its top-level code runs with the user's rights, so only folders
whose every `.py` file is trusted code belong in WSOLBENCH_PLUGINS. A plugin file that fails to
import is left out and recorded as a `PluginLoadError` (`plugin_failures()`), with a warning:
one broken file does not stop the commands that do not need it."""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import traceback
from pathlib import Path

METHODS: dict[str, type] = {}
DATASETS: dict[str, type] = {}

REPO_ROOT = Path(__file__).resolve().parent.parent
_loaded_files: set[Path] = set()
_failures: dict[Path, tuple[int, "PluginLoadError"]] = {}  # path -> (mtime_ns when it failed, error)
log = logging.getLogger(__name__)


class PluginLoadError(ImportError):
    """A plugin file that raised while being imported: `path` and a one-line `reason`
    (exception type, message, and the line of the file where it was raised)."""

    def __init__(self, path: Path, err: BaseException):
        path = Path(path)
        first = (str(err).strip().splitlines() or [""])[0]
        line = err.lineno if isinstance(err, SyntaxError) and err.lineno else next(
            (f.lineno for f in reversed(traceback.extract_tb(err.__traceback__))
             if Path(f.filename).resolve() == path), None)
        self.reason = f"{type(err).__name__}: {first}" + (f" (line {line})" if line else "")
        super().__init__(f"{path}: {self.reason}")
        self.path = path  # after ImportError.__init__, which sets its own `path` attribute


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


def load_plugins() -> list[PluginLoadError]:
    """Import every plugin file not imported yet. A file that raises is skipped (with a warning,
    once per version of the file) and recorded; returns the failures so far (`plugin_failures`)."""
    for folder in plugin_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.py")):
                if path.name.startswith("_"):
                    continue
                path = path.resolve()
                try:
                    mtime = path.stat().st_mtime_ns
                except OSError:
                    continue
                if path in _failures and _failures[path][0] == mtime:
                    continue  # the same broken file: not imported (nor warned about) again
                try:
                    load_plugin_file(path)
                    _failures.pop(path, None)
                except Exception as err:  # any error of foreign code, reported with its file
                    failure = PluginLoadError(path, err)
                    _failures[path] = (mtime, failure)
                    log.warning("plugin file skipped: %s", failure)
    return plugin_failures()


def plugin_failures() -> list[PluginLoadError]:
    """The plugin files that failed to import (as of the last `load_plugins`), by path."""
    return [failure for _, (_, failure) in sorted(_failures.items())]


def _lookup(table, name, kind):
    load_plugins()
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "(none)"
        broken = "".join(f"; {f}" for f in plugin_failures())
        raise UnknownNameError(f"unknown {kind} {name!r}; known {kind}s: {known}"
                               + (f" (plugin files that failed to import{broken})" if broken else "")) from None


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
