"""The one registry mechanism: methods, datasets, backbones and profiles are each a `Registry`
(a name -> object table filled by a decorator, with the same errors for unknown names).

Method and dataset plugins live in `methods/*.py` and `datasets/*.py` at the repository root
(or any folder given by WSOLBENCH_PLUGINS) and are loaded by path, so the folder name
`datasets` never clashes with other installed packages.

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
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

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


class UnknownNameError(KeyError, ValueError):  # a ValueError too: callers that catch bad arguments catch it
    def __str__(self):  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class Registry(Mapping):
    """Registered objects by name. `load` (called before every lookup) imports whatever
    registers into this table (plugin files, the backbone or profile modules)."""

    def __init__(self, kind: str, load: Callable[[], object] | None = None,
                 failures: Callable[[], list] | None = None):
        # `failures`: what failed to load, named by the unknown-name error (plugin files)
        self.kind, self._load, self._failures, self._table = kind, load, failures, {}

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
            broken = "".join(f"; {f}" for f in (self._failures() if self._failures else []))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}"
                                   + (f" (files that failed to import{broken})" if broken else "")) from None

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
    """The plugin files of the current plugin folders that failed to import (as of the last
    `load_plugins`), by path."""
    folders = {d.resolve() for d in plugin_dirs()}
    return [failure for path, (_, failure) in sorted(_failures.items()) if path.parent in folders]


METHODS = Registry("method", load_plugins, plugin_failures)
DATASETS = Registry("dataset", load_plugins, plugin_failures)


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
