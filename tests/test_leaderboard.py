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


def _with(rec, **fields):
    return seal({**{k: v for k, v in rec.items() if k != "checksum"}, **fields})


def test_stronger_supervision_rows_stand_apart_and_unranked():
    records = [record("weak-a", 0, 30.0), record("weak-b", 0, 20.0), _with(record("full", 0, 90.0), supervision="full")]
    rows = summarize(records)["d1"]
    assert [r["method"] for r in rows] == ["weak-a", "weak-b", "full"]  # 90 is not first: it is not ranked
    text = render_markdown(records)
    ranked, _, rest = text.partition("Stronger supervision")
    assert "| 1   | weak-a" in ranked and "full" not in ranked.split("## d1")[1]
    assert "full: full" in rest and "| -   | full" in rest


def test_tables_never_rank_two_budgets_or_backbones_together():
    records = [record("a", 0, 10.0), _with(record("a", 0, 50.0), budget="smoke"),
               _with(record("b", 0, 30.0), backbone="resnet50")]
    tables = summarize(records)
    assert set(tables) == {"d1 (budget quick, backbone small-cnn)", "d1 (budget smoke, backbone small-cnn)",
                           "d1 (budget quick, backbone resnet50)"}
    assert all(len(rows) == 1 for rows in tables.values())
    assert set(summarize([record("a", 0, 10.0), record("b", 0, 30.0)])) == {"d1"}


def test_the_transfer_track_gets_a_table_per_pair_with_its_references():
    def transfer(method, seed, pxap):
        return _with(record(method, seed, pxap, dataset="tgt"), track="transfer", source="src", target="tgt",
                     metrics={"PxAP": pxap, "Top-1 Cls": 50.0}, timings={"total_s": 2.0})

    records = [transfer("source-only", 0, 10.0), transfer("shot", 0, 20.0), transfer("shot", 1, 22.0),
               transfer("target-supervised", 0, 40.0)]
    text = render_markdown([], transfer=records)
    section = text[text.index("### src -> tgt"):]
    order = [section.index(n) for n in ("source-only (lower reference)", "| shot", "target-supervised (upper")]
    assert order == sorted(order) and "21.0 ± 1.4" in section
