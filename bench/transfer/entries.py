"""The checks of the transfer track's sealed entries (`<results>/transfer/<source>__<target>/
<adaptation>/seed<k>.json`), the counterpart of `bench.entries.check_entries` for the grid's
`<dataset>/<method>/seed<k>.json`: fields, schema, checksum, configuration hash, layout and
the adaptation file's hash (the target-supervised row: bench/transfer/cell.py's)."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from bench.config import config_hash
from bench.entries import (ENTRY_NAME, REQUIRED, RESULT_SCHEMA, EntryError, Problem, entry_checksum, file_sha256,
                           method_file_sha256, parse_entry)
from bench.transfer.adaptation import SourceOnly, all_adaptations
from bench.transfer.cell import TARGET_SUPERVISED, TRACK, pair_name

log = logging.getLogger(__name__)


def _code_hashes() -> dict[str, str | None]:
    from bench.transfer import cell

    hashes = {name: method_file_sha256(cls) for name, cls in all_adaptations().items()}
    hashes[SourceOnly.name] = None  # defined in bench/transfer/adaptation.py, no plugin file
    hashes[TARGET_SUPERVISED] = file_sha256(cell.__file__)
    return hashes


def check_transfer_record(record: dict, rel: tuple[str, ...], hashes: dict) -> list[str]:
    reasons = [f"missing field {k!r}" for k in (*REQUIRED, "source", "target") if k not in record]
    if reasons:
        return reasons
    if record["schema"] != RESULT_SCHEMA:
        reasons.append(f"schema {record['schema']}, this harness writes schema {RESULT_SCHEMA} (rerun the cell)")
    if record["checksum"] != entry_checksum(record):
        reasons.append("checksum does not match the content (edited after the runner wrote it)")
    where = (pair_name(record["source"], record["target"]), record["method"], f"seed{record['seed']}.json")
    if rel != where:
        reasons.append(f"lies at {'/'.join(rel)} but is the cell {'/'.join(where)}")
    if record["config_hash"] != config_hash(record["config"]):
        reasons.append("config_hash is not the hash of its config")
    if record["method"] not in hashes:
        reasons.append(f"adaptation {record['method']!r} is not registered")
    elif hashes[record["method"]] != record["code_version"].get("method_file_sha256"):
        reasons.append("adaptation file changed since this entry was written: rerun the cell")
    if record["status"] == "ok":
        if record["primary_metric"] not in record["metrics"]:
            reasons.append(f"primary metric {record['primary_metric']!r} missing from metrics")
        bad = [k for k, v in record["metrics"].items() if not isinstance(v, (int, float)) or not math.isfinite(v)]
        reasons += [f"metric {k!r} is not a finite number" for k in bad]
    elif record["status"] != "failed":
        reasons.append(f"status {record['status']!r} is neither 'ok' nor 'failed'")
    return reasons


def check_transfer_entries(results_dir: Path) -> list[Problem]:
    """Every problem of every transfer entry under `results_dir/transfer`."""
    root = Path(results_dir) / TRACK
    hashes = _code_hashes()
    problems: list[Problem] = []
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        rel = path.relative_to(root).parts
        if len(rel) != 3 or not ENTRY_NAME.match(rel[-1]):
            problems.append(Problem(str(path), "not a transfer entry path "
                                                "(<source>__<target>/<adaptation>/seed<k>.json)"))
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            problems.append(Problem(str(path), f"not valid JSON ({err})"))
            continue
        problems += [Problem(str(path), r) for r in check_transfer_record(record, rel, hashes)]
    return problems


def load_transfer_entries(results_dir: Path) -> tuple[list[dict], list[Problem]]:
    """The transfer entries the tables may publish, and those left out (malformed, edited or
    misplaced; a changed adaptation file is for `--check` to report, as for the grid's)."""
    root = Path(results_dir) / TRACK
    records: list[dict] = []
    excluded: list[Problem] = []
    hashes = _code_hashes()
    for path in sorted(root.glob("*/*/seed*.json")) if root.is_dir() else []:
        try:
            record = parse_entry(path)
        except EntryError as err:
            excluded += [Problem(err.path, reason) for reason in err.reasons]
            continue
        reasons = [r for r in check_transfer_record(record, path.relative_to(root).parts, hashes)
                   if not r.startswith("adaptation file changed")]
        if reasons:
            excluded += [Problem(str(path), r) for r in reasons]
            log.warning("transfer entry excluded from the tables: %s: %s", path, "; ".join(reasons))
        else:
            records.append(record)
    return records, excluded

