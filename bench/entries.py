"""Leaderboard entries: the result JSON of one cell, sealed by a checksum, and the checks
`python -m bench leaderboard --check` runs over a result folder.

An entry is written once by the runner (`write_entry`): its `checksum` is the SHA-256 of the
entry's canonical JSON without the checksum itself, so any hand edit of a metric, a config or
a timing shows. Its `config_hash` must be the hash of its `config`, and its
`code_version.method_file_sha256` the hash of the method's file as it is now (a method changed
after its entries were written needs them rerun). `val_metrics`, the same metrics on the
validation split (where a validation pass ran: `RunSettings.val_metrics`), are what `bench
sweep` selects settings by. `selection` says which checkpoint each training run of the cell
kept (docs/protocol.md, "Model selection"): "method" (the method's own run) and "stage1"
(criterion -> the stage-1 classifier checkpoint it read), each with its "criterion" and, when
validated, the "epoch" kept of "epochs".
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench.config import SELECTION_CRITERIA, config_hash
from bench.io import atomic_write_json, results_lock

RESULT_SCHEMA = 2  # 2: checksum, artifacts, submission fields
ENTRY_NAME = re.compile(r"^seed(\d+)\.json$")

# key -> type(s) every entry carries (failed cells too)
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": int, "method": str, "dataset": str, "seed": int, "budget": str, "backbone": str, "task": str,
    "primary_metric": str, "config": dict, "config_hash": str, "code_version": dict, "torch": str,
    "device": str, "status": str, "metrics": dict, "timings": dict, "finished_at": str, "checksum": str,
}


# An entry is a few KB; these bounds keep a corrupt or hostile file from exhausting memory or
# the interpreter's recursion limit before the schema check can name it.
MAX_ENTRY_BYTES = 1 << 20
MAX_ENTRY_DEPTH = 32

# optional keys -> type(s) when present (None allowed for every one of them)
OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "val_metrics": dict, "artifacts": dict, "submission": dict, "error": str, "traceback": str, "extension": str,
    "supervision": str, "random_init": bool, "selection": dict,
}
_NUMBER = (int, float)


class EntryError(ValueError):
    """An entry file that cannot be used: unreadable, not JSON, too large or deep, or not of the
    entry schema. The message is `file: reason`."""

    def __init__(self, path, reason: str | list[str]):
        self.reasons = [reason] if isinstance(reason, str) else list(reason)
        self.path, self.reason = str(path), "; ".join(self.reasons)
        super().__init__(f"{self.path}: {self.reason}")


class ResultsFolderError(ValueError):
    """A result folder that is missing or holds no entry (a mistyped --results): never read as
    "nothing to publish"."""


def _depth(text: str) -> int:
    """Deepest nesting of arrays/objects in JSON `text`, brackets inside strings not counted."""
    brackets = re.sub(r"[^\[\]{}]", "", re.sub(r'"(?:[^"\\]|\\.)*"', "", text))
    depth = deepest = 0
    for ch in brackets:
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _is_number(value) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def schema_reasons(record) -> list[str]:
    """Why `record` (parsed JSON) is not of the entry schema: the type of every required field,
    of the optional ones present, and of the values the tables read (metrics, timings,
    code_version, artifacts, submission). Empty when the tables can use it safely."""
    if not isinstance(record, dict):
        return [f"not a JSON object (a JSON {type(record).__name__})"]
    reasons: list[str] = []
    for key, kind in REQUIRED.items():
        if key not in record:
            reasons.append(f"missing field {key!r}" + (" (written before entries were sealed: rerun the cell)"
                                                        if key == "checksum" else ""))
        elif not isinstance(record[key], kind) or (kind is int and isinstance(record[key], bool)):
            reasons.append(f"field {key!r} is {type(record[key]).__name__}, expected "
                           f"{getattr(kind, '__name__', kind)}")
    for key, kind in OPTIONAL.items():
        if record.get(key) is not None and not isinstance(record[key], kind):
            reasons.append(f"field {key!r} is {type(record[key]).__name__}, expected {kind.__name__} or null")
    if reasons:
        return reasons
    for key in ("metrics", "timings", "val_metrics"):
        bad = [k for k, v in (record.get(key) or {}).items() if not _is_number(v)]
        if bad:
            reasons.append(f"{key} {bad[0]!r} is {type(record[key][bad[0]]).__name__}, expected a number")
    sha = record["code_version"].get("method_file_sha256")
    if sha is not None and not isinstance(sha, str):
        reasons.append("code_version.method_file_sha256 is not a string")
    artifacts = record.get("artifacts") or {}
    for key in ("file", "sha256"):
        if artifacts and not isinstance(artifacts.get(key), str):
            reasons.append(f"artifacts.{key} is not a string")
    deviations = (record.get("submission") or {}).get("deviations", [])
    if not (isinstance(deviations, list) and all(isinstance(d, str) for d in deviations)):
        reasons.append("submission.deviations is not a list of strings")
    return reasons


def parse_entry(path: Path) -> dict:
    """Read and validate one entry file (size, UTF-8, JSON, nesting depth, schema); raises
    `EntryError` naming the file and the reason. The checksum is not checked here."""
    path = Path(path)
    try:
        if not path.is_file():
            raise EntryError(path, "not a regular file")
        size = path.stat().st_size
        if size > MAX_ENTRY_BYTES:
            raise EntryError(path, f"{size} bytes, more than the {MAX_ENTRY_BYTES} an entry may have")
        data = path.read_bytes()
    except OSError as err:
        raise EntryError(path, f"cannot be read ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise EntryError(path, f"not UTF-8 text (byte {err.start})") from None
    depth = _depth(text)
    if depth > MAX_ENTRY_DEPTH:
        raise EntryError(path, f"JSON nested {depth} levels deep, more than the {MAX_ENTRY_DEPTH} an entry may have")
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise EntryError(path, f"not valid JSON ({err})") from None
    reasons = schema_reasons(record)
    if reasons:
        raise EntryError(path, reasons)
    return record


def read_entry(path: Path) -> dict | None:
    """The entry at `path` when it is a readable, schema-valid entry, else None (for resume:
    an unusable entry is a cell to rerun, never a crash)."""
    try:
        return parse_entry(path)
    except EntryError:
        return None


def is_finished_entry(path: Path, expected_hash: str, method_sha256: str | None,
                      with_val_metrics: bool = False) -> bool:
    """A finished cell: a schema-valid entry of the current schema, status ok, intact
    (checksum), with the expected config hash, written by the method file as it is now, and
    holding validation metrics when the run asks for them (`with_val_metrics`)."""
    record = read_entry(path)
    if record is None:
        return False
    return (record["status"] == "ok" and record["config_hash"] == expected_hash
            and record["schema"] == RESULT_SCHEMA and record["checksum"] == entry_checksum(record)
            and record["code_version"].get("method_file_sha256") == method_sha256
            and (not with_val_metrics or bool(record.get("val_metrics"))))


def integrity_reasons(record: dict, path: Path, results_dir: Path) -> list[str]:
    """Why a schema-valid entry cannot be published at all: another schema version, a checksum
    that does not match (edited by hand), a config hash that is not its config's, or a file
    that lies at another cell's path."""
    reasons: list[str] = []
    if record["schema"] != RESULT_SCHEMA:
        reasons.append(f"schema {record['schema']}, this harness writes schema {RESULT_SCHEMA} (rerun the cell)")
    if record["checksum"] != entry_checksum(record):
        reasons.append("checksum does not match the content (edited after the runner wrote it)")
    rel = Path(path).relative_to(results_dir).parts
    where = (record["dataset"], record["method"], f"seed{record['seed']}.json")
    if tuple(rel) != where:
        reasons.append(f"lies at {'/'.join(rel)} but is the cell {'/'.join(where)}")
    cfg = record["config"]
    if record["config_hash"] != config_hash(cfg):
        reasons.append(f"config_hash {record['config_hash']} is not the hash of its config ({config_hash(cfg)})")
    return reasons


TRANSFER_FOLDER = "transfer"  # the transfer track's entries, checked by bench.transfer.entries


def entry_files(results_dir: Path) -> list[Path]:
    """The entry files of a result folder (<dataset>/<method>/seed<k>.json); raises
    `ResultsFolderError` when the folder does not exist or is not a folder."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsFolderError(f"result folder {results_dir} does not exist" if not results_dir.exists()
                                 else f"result folder {results_dir} is not a folder")
    return sorted(p for p in results_dir.glob("*/*/seed*.json") if ENTRY_NAME.match(p.name))


def entry_checksum(record: dict) -> str:
    body = {k: v for k, v in record.items() if k not in ("checksum", "_path")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def seal(record: dict) -> dict:
    record = {k: v for k, v in record.items() if k != "_path"}
    record["checksum"] = entry_checksum(record)
    return record


def write_entry(results_dir: Path, path: Path, record: dict) -> dict:
    """Seal `record` and write it atomically at `path` under the result folder's lock."""
    sealed = seal(record)
    with results_lock(results_dir):
        atomic_write_json(path, sealed)
    return sealed


def file_sha256(path) -> str | None:
    if not path or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def method_file_sha256(method_cls) -> str | None:
    """The hash of the plugin file that defines `method_cls` (None without one): what an entry
    records as `code_version.method_file_sha256`."""
    return file_sha256(getattr(method_cls, "source_file", None))


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _method_file_hashes() -> dict[str, str | None]:
    from bench.registry import all_methods

    return {name: method_file_sha256(cls) for name, cls in all_methods().items()}


def check_record(record: dict, path: Path, results_dir: Path, method_hashes: dict[str, str | None]) -> list[str]:
    """Reasons why one entry is not a valid leaderboard entry (empty when it is)."""
    reasons = schema_reasons(record)
    if reasons:
        return reasons
    reasons = integrity_reasons(record, path, results_dir)
    cfg = record["config"]
    for key in ("method", "dataset", "seed", "backbone"):
        if key in cfg and cfg[key] != record[key]:
            reasons.append(f"{key} is {record[key]!r} but its config says {cfg[key]!r}")
    if record["method"] not in method_hashes:
        reasons.append(f"method {record['method']!r} is not registered (no plugin file defines it)")
    else:
        now, then = method_hashes[record["method"]], record["code_version"].get("method_file_sha256")
        if then is None:
            reasons.append("no method code hash (code_version.method_file_sha256)")
        elif now != then:
            reasons.append(f"method file changed since this entry was written (sha256 {then[:12]} then, "
                           f"{str(now)[:12]} now): rerun the cell")
    if record["status"] == "ok":
        metrics = record["metrics"]
        if record["primary_metric"] not in metrics:
            reasons.append(f"primary metric {record['primary_metric']!r} missing from metrics")
        for name, value in metrics.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                reasons.append(f"metric {name!r} is {value!r}, not a finite number")
        val = record.get("val_metrics")  # optional: entries written before validation metrics were kept lack it
        if val is not None and not (isinstance(val, dict) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in val.values())):
            reasons.append("val_metrics is not a mapping of metric names to numbers")
        reasons += _selection_problems(record.get("selection"))
    elif record["status"] != "failed":
        reasons.append(f"status {record['status']!r} is neither 'ok' nor 'failed'")
    artifacts = record.get("artifacts")
    if artifacts:
        art = path.parent / artifacts.get("file", "")
        if not art.is_file():
            reasons.append(f"its artifact file {art.name} is missing")
        elif file_sha256(art) != artifacts.get("sha256"):
            reasons.append(f"its artifact file {art.name} does not match its sha256")
    return reasons


def _selection_problems(selection) -> list[str]:
    """Why an entry's `selection` is malformed (optional: entries written before model selection lack it)."""
    if selection is None:
        return []
    if not isinstance(selection, dict):
        return ["selection is not a mapping"]
    runs = [("method", selection["method"])] if "method" in selection else []
    stage1 = selection.get("stage1", {})
    if not isinstance(stage1, dict):
        return ["selection.stage1 is not a mapping of checkpoints"]
    runs += [(f"stage1.{k}", v) for k, v in stage1.items()]
    reasons = []
    for where, run in runs:
        if not isinstance(run, dict) or run.get("criterion") not in SELECTION_CRITERIA:
            reasons.append(f"selection.{where} has no criterion among {', '.join(SELECTION_CRITERIA)}")
        elif not all(run.get(k) is None or (isinstance(run[k], int) and not isinstance(run[k], bool))
                     for k in ("epoch", "epochs")):
            reasons.append(f"selection.{where}: epoch and epochs must be integers")
    return reasons


def empty_folder_message(results_dir: Path) -> str:
    return (f"result folder {results_dir} holds no entry (<dataset>/<method>/seed<k>.json); "
            f"is --results mistyped? (allow_empty / --allow-empty accepts an empty folder)")


def check_entries(results_dir: Path, methods: set[str] | None = None, allow_empty: bool = False) -> list[Problem]:
    """Every problem of every entry under `results_dir` (of `methods` only, when given): schema,
    checksum, config hash, method code hash, layout, duplicate cells; and, for the whole folder,
    the plugin files that failed to import. A missing folder, or one without any entry, raises
    `ResultsFolderError` unless `allow_empty` (a mistyped --results is not "all valid")."""
    from bench.registry import plugin_failures

    results_dir = Path(results_dir)
    if not allow_empty and not entry_files(results_dir):
        raise ResultsFolderError(empty_folder_message(results_dir))
    method_hashes = _method_file_hashes()
    problems: list[Problem] = []
    if methods is None:
        problems += [Problem(str(f.path), f"plugin file failed to import: {f.reason}") for f in plugin_failures()]
    cells: dict[tuple, list[Path]] = defaultdict(list)
    for path in sorted(results_dir.rglob("*.json")):
        rel = path.relative_to(results_dir)
        if rel.parts[0] == TRANSFER_FOLDER:
            continue
        if len(rel.parts) != 3 or not ENTRY_NAME.match(rel.name):
            problems.append(Problem(str(path), "not an entry path (<dataset>/<method>/seed<k>.json)"))
            continue
        if methods is not None and rel.parts[1] not in methods:
            continue
        try:
            record = parse_entry(path)
        except EntryError as err:
            problems += [Problem(err.path, reason) for reason in err.reasons]
            continue
        problems += [Problem(str(path), r) for r in check_record(record, path, results_dir, method_hashes)]
        cells[(record["dataset"], record["method"], record["seed"])].append(path)
    for (dataset, method, seed), paths in cells.items():
        if len(paths) > 1:
            for path in paths:
                others = ", ".join(str(p) for p in paths if p != path)
                problems.append(Problem(str(path), f"duplicate cell {dataset}/{method}/seed{seed} (also {others})"))
    return problems
