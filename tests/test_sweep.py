"""`bench sweep`: one setting over values, chosen on validation metrics; validation metrics in
entries; the grid reruns a cell whose method file changed."""
import json

import pytest
import torch

from bench.cli import main
from bench.entries import seal
from bench.grid import Cell, run_grid
from bench.method import Localization, Method
from bench.sweep import SweepParam, parse_param, summarize_sweep
from tests.conftest import SMALL_DATASETS
from tests.harness import SMOKE, run_small_cell, small_dataset
from tests.test_leaderboard import record


def test_parse_param_reads_owner_key_and_values():
    assert parse_param("colocam.joint_weight=0, 0.01,1") == SweepParam("colocam", "joint_weight", ("0", "0.01", "1"))
    assert parse_param("synth-objects.image_size=32,64").owner == "synth-objects"


@pytest.mark.parametrize("text, message", [
    ("colocam.joint_weight", "expected OWNER.KEY=V1,V2"),
    ("nosuch.x=1,2", "'nosuch' is neither a method nor a dataset"),
    ("colocam.nosuch=1,2", "colocam has no setting 'nosuch'"),
    ("colocam.joint_weight=1", "at least two values"),
    ("colocam.joint_weight=1,1", "repeated"),
    ("colocam.joint_weight=1,a/b", "cannot name a folder"),
])
def test_parse_param_errors_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        parse_param(text)


def _entry(folder, value, seed, val, test, with_val=True):
    path = folder / f"k={value}" / "ds" / "m" / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = record("m", seed, test, dataset="ds")  # sealed: the sweep reads only intact entries
    if with_val:
        entry = seal({**entry, "val_metrics": {"PxAP": val}})
    path.write_text(json.dumps(entry))


def test_the_best_validation_mean_is_chosen_never_the_test(tmp_path):
    param = SweepParam("m", "k", ("a", "b", "c", "d"))
    for seed in (0, 1):
        _entry(tmp_path, "a", seed, val=50, test=90)  # best on test, not on validation
        _entry(tmp_path, "b", seed, val=60 + seed, test=10)
        _entry(tmp_path, "c", seed, val=60 + seed, test=20)  # ties with b: the value listed first wins
        _entry(tmp_path, "d", seed, val=99, test=99, with_val=seed == 0)  # a seed without validation metrics
    rows = {r.value: r for r in summarize_sweep(param, tmp_path, [0, 1])}
    assert [v for v, r in rows.items() if r.chosen] == ["b"]
    assert rows["b"].val == pytest.approx((60.5, 0.5 ** 0.5))
    assert rows["a"].test["PxAP"] == (90, 0)
    assert rows["d"].val is None
    # a missing seed also rules a value out
    rows = {r.value: r for r in summarize_sweep(param, tmp_path, [0, 1, 2])}
    assert not any(r.chosen for r in rows.values())


def test_entries_carry_validation_metrics_where_a_validation_pass_ran(shared_dirs, tmp_path):
    # mask datasets validate for the Dice threshold; box datasets only when the run asks
    record = run_small_cell("center", "synth-tissue", 0, shared_dirs, tmp_path)
    assert record["status"] == "ok" and "PxAP" in record["val_metrics"] and "PxAP" in record["metrics"]
    plain = run_small_cell("center", "synth-objects", 0, shared_dirs, tmp_path)
    assert plain["status"] == "ok" and "val_metrics" not in plain
    asked = run_small_cell("center", "synth-objects", 0, shared_dirs, tmp_path, val_metrics=True)
    assert "MaxBoxAccV2" in asked["val_metrics"]
    assert asked["metrics"] == plain["metrics"]  # the extra pass runs after the test pass
    assert main(["leaderboard", "--check", "--results", str(tmp_path)]) == 0


def test_a_run_asking_for_validation_metrics_reruns_entries_without_them(shared_dirs, tmp_path, capsys):
    sets = [x for k, v in SMALL_DATASETS["synth-objects"].items() for x in ("--set", f"synth-objects.{k}={v}")]
    args = ["run", "--methods", "center", "--datasets", "synth-objects", "--seeds", "0", "--budget", "smoke",
            "--data-root", str(shared_dirs["data"]), "--cache-dir", str(shared_dirs["cache"]), "--results",
            str(tmp_path / "results"), "--jobs", "1", *sets]
    entry = tmp_path / "results" / "synth-objects" / "center" / "seed0.json"
    assert main(args) == 0 and "val_metrics" not in json.loads(entry.read_text())
    assert main(args + ["--val-metrics"]) == 0
    assert "ran 1, resumed 0" in capsys.readouterr().out
    assert "MaxBoxAccV2" in json.loads(entry.read_text())["val_metrics"]
    assert main(args + ["--val-metrics"]) == 0 and main(args) == 0  # both resume it now
    assert capsys.readouterr().out.count("ran 0, resumed 1") == 2


def test_sweep_command_runs_each_value_and_chooses_on_validation(shared_dirs, tmp_path, capsys):
    sets = [x for k, v in SMALL_DATASETS["synth-objects"].items() for x in ("--set", f"synth-objects.{k}={v}")]
    args = ["sweep", "random.grid=2,7", "--datasets", "synth-objects", "--seeds", "0,1", "--budget", "smoke",
            "--data-root", str(shared_dirs["data"]), "--cache-dir", str(shared_dirs["cache"]), "--out",
            str(tmp_path), "--jobs", "1", *sets]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "4 cells (2 values of grid)" in printed
    entries = {v: [json.loads((tmp_path / f"grid={v}" / "synth-objects" / "random" / f"seed{s}.json").read_text())
                   for s in (0, 1)] for v in ("2", "7")}
    assert {e["config"]["method_config"]["grid"] for e in entries["2"]} == {2}
    val = {v: sum(e["val_metrics"]["MaxBoxAccV2"] for e in es) / 2 for v, es in entries.items()}
    best = max(val, key=val.get) if val["2"] != val["7"] else "2"
    table = (tmp_path / "README.md").read_text()
    assert f"Chosen: **{best}**." in table and f"| **{best}** " in table
    assert "default now: 7" in table and "budget: smoke; seeds: 0, 1" in table
    assert f"random on synth-objects: grid={best} chosen on validation" in printed
    assert main(args) == 0  # a rerun resumes every cell
    assert capsys.readouterr().out.count("ran 0, resumed 2, failed 0") == 2
    assert main(["sweep", "random.grid=2,7", "--set", "random.grid=3", "--budget", "smoke"]) == 2
    assert "fixes the setting this sweep varies" in capsys.readouterr().err


class Constant(Method):
    name = "constant-test"

    def localize(self, images, labels):
        return Localization(images.mean(1))


def test_a_cell_whose_method_file_changed_is_rerun(shared_dirs, tmp_path, monkeypatch):
    source = tmp_path / "constant.py"
    source.write_text("# version 1\n")
    monkeypatch.setattr(Constant, "source_file", str(source), raising=False)
    from tests.harness import registered, small_cell, smoke_settings

    cells = [small_cell("constant-test", "synth-objects", 0)]

    def grid():
        with registered(Constant):
            return run_grid(cells, smoke_settings(shared_dirs, tmp_path / "r"))

    assert len(grid().ran) == 1
    assert len(grid().resumed) == 1
    source.write_text("# version 2\n")
    assert len(grid().ran) == 1, "an entry written by an older method file is not finished"
    assert len(grid().resumed) == 1


@pytest.mark.parametrize("jobs", [1, 2])
def test_cells_with_their_own_result_folders_run_in_one_grid(shared_dirs, tmp_path, jobs):
    """`bench sweep` hands every value's cells to one grid (one pool, one job array): the same
    dataset, method and seed twice, each cell writing to its own folder, inline and in workers."""
    import dataclasses

    from tests.harness import tiny_cells

    (cell,) = tiny_cells(["random"], ["synth-objects"], [0], shared_dirs["data"])
    from tests.harness import smoke_settings

    cells = [dataclasses.replace(cell, results_dir=str(tmp_path / f"v={v}")) for v in (1, 2)]

    def grid():
        return run_grid(cells, smoke_settings(shared_dirs, tmp_path / "unused", jobs=jobs))

    report = grid()
    assert sorted(report.ran) == ["v=1/synth-objects/random/seed0", "v=2/synth-objects/random/seed0"]
    for v in (1, 2):
        assert json.loads((tmp_path / f"v={v}" / "synth-objects" / "random" / "seed0.json").read_text())["status"] == "ok"
    assert not (tmp_path / "unused").exists()
    assert len(grid().resumed) == 2


def test_committed_sweeps_are_valid_and_chose_the_current_default():
    """Each sweep under leaderboard/sweeps/ is a default's evidence: its entries pass the
    leaderboard checks (so they were written by the method file as it is now) and the value
    it chooses on validation is the setting's default."""
    from bench.entries import check_entries
    from bench.settings import DEFAULT_SEEDS
    from bench.registry import REPO_ROOT

    sweeps = sorted(p for p in (REPO_ROOT / "leaderboard" / "sweeps").glob("*") if p.is_dir())
    if not sweeps:
        pytest.skip("no sweep is committed under leaderboard/sweeps (the last were removed with the defaults they "
                    "chose: see leaderboard/NOTES.md)")
    for folder in sweeps:
        listed = next(line for line in (folder / "README.md").read_text().splitlines() if line.startswith("- values: "))
        values = listed.removeprefix("- values: ").split(" (default")[0]
        param = parse_param(f"{folder.name}={values.replace(' ', '')}")
        assert {p.name for p in folder.iterdir() if p.is_dir()} == {param.folder(v) for v in param.values}
        for value in param.values:
            assert not check_entries(folder / param.folder(value)), (folder, value)
        (chosen,) = [r.value for r in summarize_sweep(param, folder, list(DEFAULT_SEEDS)) if r.chosen]
        assert param.default() == param.typed(chosen), f"{folder.name}: chose {chosen}"


def test_committed_diagnostics_are_valid():
    """A diagnostic under leaderboard/diagnostics/ is a sweep kept as evidence, not as a default's
    choice: its entries must still pass the leaderboard checks (written by the method file as it is
    now), so a changed method file makes it fail until the diagnostic is rerun."""
    from bench.entries import check_entries
    from bench.registry import REPO_ROOT

    folders = sorted(p for p in (REPO_ROOT / "leaderboard" / "diagnostics").glob("*") if p.is_dir())
    for folder in folders:
        values = [p for p in folder.iterdir() if p.is_dir()]
        assert values, folder
        for value in values:
            assert list(value.rglob("seed*.json")), (folder, value.name)
            assert not check_entries(value), (folder, value.name)


def test_sweep_tasks_on_a_cluster_leave_the_sweep_table_alone(shared_dirs, tmp_path):
    """Cluster tasks regenerate the leaderboard tables beside their result folder; in a sweep that
    folder holds the sweep's table, so its tasks write none (submitit's local executor)."""
    pytest.importorskip("submitit", reason="submitit is not installed (pip install -e '.[slurm]')")
    sets = [x for k, v in SMALL_DATASETS["synth-objects"].items() for x in ("--set", f"synth-objects.{k}={v}")]
    args = ["sweep", "random.grid=2,7", "--datasets", "synth-objects", "--seeds", "0", "--budget", "smoke",
            "--data-root", str(shared_dirs["data"]), "--cache-dir", str(shared_dirs["cache"]), "--out",
            str(tmp_path / "sweep"), "--launcher", "local", "--cpus-per-task", "1", "--time-min", "10", *sets]
    assert main(args) == 0
    table = (tmp_path / "sweep" / "README.md").read_text()
    assert table.startswith("# Sweep of random.grid") and "Chosen: **" in table
    assert not (tmp_path / "sweep" / "results.csv").exists(), "a task wrote leaderboard tables into the sweep"
