import json

from bench.config import config_hash
from bench.entries import RESULT_SCHEMA, seal
from bench.leaderboard import render_markdown, summarize, write_leaderboard


def record(method, seed, value, dataset="d1", status="ok"):
    """A sealed entry of the current schema (the tables publish only intact entries)."""
    config = {"method": method, "dataset": dataset, "seed": seed}
    return seal({"schema": RESULT_SCHEMA, "method": method, "dataset": dataset, "seed": seed, "budget": "quick",
                 "backbone": "small-cnn", "task": "image", "status": status, "primary_metric": "PxAP",
                 "metrics": {"PxAP": value} if status == "ok" else {}, "timings": {"fit_s": 1.0},
                 "config": config, "config_hash": config_hash(config), "code_version": {"method_file_sha256": None},
                 "device": "cpu", "torch": "2.13.0", "extension": "cpu", "finished_at": "2026-11-24T12:00:00+00:00",
                 "error": None if status == "ok" else "boom"})


def test_rows_are_ranked_by_the_primary_metric_with_mean_and_std():
    rows = summarize([record("a", 0, 10.0), record("a", 1, 20.0), record("b", 0, 40.0), record("b", 1, 40.0),
                      record("c", 0, 0.0, status="failed")])["d1"]
    assert [r["method"] for r in rows] == ["b", "a"]
    mean, std = rows[1]["PxAP"]
    assert mean == 15.0 and abs(std - 7.0710678) < 1e-6  # sample std of (10, 20)


def test_markdown_has_a_header_a_table_and_the_failures(tmp_path):
    records = [record("a", 0, 10.0), record("b", 0, 30.0), record("c", 0, 0.0, status="failed")]
    text = render_markdown(records)
    assert "- budget: quick" in text and "- device: cpu" in text and "2026-11-24" in text
    assert text.index("| b ") < text.index("| a ")
    assert "30.0 ± 0.0" in text and "d1/c/seed0: boom" in text
    for r in records:
        path = tmp_path / "results" / r["dataset"] / r["method"] / f"seed{r['seed']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
    readme, csv = write_leaderboard(tmp_path / "results", tmp_path)
    assert readme.read_text().startswith("# wsolbench leaderboard")
    assert csv.read_text().splitlines()[0].startswith("dataset,method,seed")
