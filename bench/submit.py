"""`python -m bench submit methods/<new>.py`: run one new method under the protocol on every
compatible dataset present, validate its entries and regenerate the tables."""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench.registry import METHODS, load_plugin_file, load_plugins, plugin_dirs

log = logging.getLogger(__name__)


class SubmissionError(ValueError):
    """The submitted file cannot be submitted (message names the file and why)."""


def _where(err: BaseException, path: Path) -> str:
    """`file:line` of the deepest frame of `err` inside the submitted file, if any."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() == path]
    if isinstance(err, SyntaxError) and err.lineno:
        return f"{path}:{err.lineno}"
    return f"{path}:{frames[-1].lineno}" if frames else str(path)


def method_of_file(path: Path) -> type:
    """The one registered method `path` defines (SubmissionError otherwise)."""
    path = Path(path).resolve()
    if not path.is_file() or path.suffix != ".py":
        raise SubmissionError(f"{path}: not a Python file")
    folders = [d.resolve() for d in plugin_dirs()]
    if path.parent not in folders:
        raise SubmissionError(f"{path}: submitted methods must live in a plugin folder, so that the leaderboard finds "
                              f"them again: {', '.join(str(d) for d in folders)} (add a folder with WSOLBENCH_PLUGINS)")
    try:
        load_plugins()
        load_plugin_file(path)
    except Exception as err:
        raise SubmissionError(f"{_where(err, path)}: cannot import the plugins ({type(err).__name__}: {err})") from None
    found = sorted((cls for cls in METHODS.values()
                    if getattr(cls, "source_file", None) and Path(cls.source_file).resolve() == path),
                   key=lambda c: c.name)
    if not found:
        raise SubmissionError(f"{path}: defines no registered method (decorate one bench.method.Method subclass "
                              f"with @register_method)")
    if len(found) > 1:
        raise SubmissionError(f"{path}: defines {len(found)} registered methods ({', '.join(c.name for c in found)}); "
                              f"a submission is one file with exactly one method")
    return found[0]


@dataclass
class SubmissionResult:
    method: str
    ran: list = field(default_factory=list)
    resumed: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    deviations: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.problems and bool(self.ran or self.resumed)


def deviations_from_protocol(budget: str, seeds, overrides: dict) -> list[str]:
    from bench.settings import DEFAULT_SEEDS, PROTOCOL_BUDGET

    out = []
    if budget != PROTOCOL_BUDGET:
        out.append(f"budget {budget}")
    if list(seeds) != list(DEFAULT_SEEDS):
        out.append(f"seeds {','.join(str(s) for s in seeds)}")
    if overrides:
        out.append("settings " + " ".join(f"{o}.{k}={v}" for o, kv in sorted(overrides.items()) for k, v in sorted(kv.items())))
    return out


def submit(path: Path, settings, overrides: dict) -> SubmissionResult:
    """Run the one method of the plugin file `path` (imported: it is code) on every compatible
    dataset present with `settings` (a `bench.settings.RunSettings`), validate its entries and
    regenerate the tables."""
    from bench.entries import check_entries
    from bench.grid import build_cells, run_grid
    from bench.leaderboard import write_leaderboard

    method = method_of_file(path)
    result = SubmissionResult(method.name, deviations=deviations_from_protocol(settings.budget.name, settings.seeds,
                                                                               overrides))
    unrelated = sorted(o for o in overrides if o != method.name and o not in _dataset_names())
    if unrelated:
        raise SubmissionError(f"--set names {', '.join(unrelated)}: a submission may only set its own method "
                              f"({method.name}) or a dataset")
    cells, skipped = build_cells([method.name], None, settings, overrides)
    result.skipped = skipped
    if not cells:
        why = "; ".join(f"{what}: {reason}" for what, reason in skipped) or "no dataset registered"
        raise SubmissionError(f"{path}: {method.name} has no compatible dataset present ({why})")
    submission = {"file": _relative(Path(path)), "protocol": not result.deviations, "deviations": result.deviations}
    report = run_grid(cells, settings.replace(submission=submission, wait=True))
    result.ran, result.resumed, result.failed = report.ran, report.resumed, report.failed
    result.problems = check_entries(settings.results_dir, methods={method.name})
    write_leaderboard(settings.results_dir, settings.results_dir.parent)
    return result


def _dataset_names() -> set[str]:
    from bench.registry import all_datasets

    return set(all_datasets())


def _relative(path: Path) -> str:
    from bench.registry import REPO_ROOT

    path = path.resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
