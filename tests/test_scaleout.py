"""Scale-out: submitit's local executor (the SLURM path), SLURM settings from flags or a file
(--jobs N local workers give the results of --jobs 1: test_reliability.py)."""
import json
import os

import pytest

from bench.grid import Cell
from bench.launch import interleave
from bench.settings import SlurmConfig, load_slurm_config
from tests.harness import run_tiny_grid

METHODS, DATASETS, SEEDS = ["cam", "center"], ["synth-objects", "synth-tissue"], [0, 1]


def test_submitit_local_executor_runs_one_task_per_cell(shared_dirs, tmp_path):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install -e '.[slurm]')")
    cfg = SlurmConfig(gpus_per_task=0, cpus_per_task=1, time_min=10, log_dir=str(tmp_path / "logs"))
    report = run_tiny_grid(["center"], ["synth-objects"], [0, 1], shared_dirs, tmp_path / "lb" / "results",
                           launcher="local", slurm=cfg)
    assert not report.failed and sorted(report.ran) == ["synth-objects/center/seed0", "synth-objects/center/seed1"]
    for seed in (0, 1):
        assert json.loads((tmp_path / "lb" / "results" / "synth-objects" / "center" / f"seed{seed}.json").read_text())[
            "status"] == "ok"
    assert "| center " in (tmp_path / "lb" / "README.md").read_text()  # each task regenerated the tables
    assert list((tmp_path / "logs").glob("*_log.out"))  # submitit's per-task logs
    again = run_tiny_grid(["center"], ["synth-objects"], [0, 1], shared_dirs, tmp_path / "lb" / "results",
                          launcher="local", slurm=cfg)
    assert len(again.resumed) == 2 and not again.ran  # re-submitting resumes


def test_slurm_settings_from_a_file_and_flags(tmp_path):
    toml = tmp_path / "slurm.toml"
    toml.write_text('partition = "gpu"\ngpus_per_task = 2\ntime_min = 90\n[additional]\nconstraint = "a100"\n')
    cfg = load_slurm_config(toml, {"time_min": "30"})
    assert cfg == SlurmConfig(partition="gpu", gpus_per_task=2, time_min=30, additional={"constraint": "a100"})
    js = tmp_path / "slurm.json"
    js.write_text(json.dumps({"partition": "cpu", "gpus": 1}))
    with pytest.raises(ValueError, match=r"slurm.json: unknown SLURM setting\(s\) gpus; known: "):
        load_slurm_config(js, {})
    with pytest.raises(ValueError, match="cannot read 'x' as int"):
        load_slurm_config(None, {"cpus_per_task": "x"})


def test_cells_are_interleaved_over_stage1_classifiers():
    specs = [Cell(m, d, s, {}) for d in ("a", "b") for m in ("x", "y", "z") for s in (0,)]
    assert [(c.dataset, c.method) for c in interleave(specs)] == [("a", "x"), ("b", "x"), ("a", "y"), ("b", "y"),
                                                                  ("a", "z"), ("b", "z")]


def test_unregistered_methods_cannot_go_to_workers(shared_dirs, tmp_path):
    from bench.grid import run_grid
    from tests.harness import smoke_settings

    # a cell names its method: one that is not registered cannot be built, here or in a worker
    with pytest.raises(ValueError, match="unknown method 'local-only'"):
        run_grid([Cell("local-only", "synth-objects", 0)], smoke_settings(shared_dirs, tmp_path, jobs=2))


def test_slurm_launcher_writes_a_job_array_through_sbatch(shared_dirs, tmp_path, monkeypatch, capsys):
    """The SLURM path up to sbatch, with stand-ins for `sbatch` (records the script submitit
    generated) and `srun` on the PATH: there is no cluster here."""
    pytest.importorskip("submitit", reason="submitit is not installed (pip install -e '.[slurm]')")
    from bench.cli import main
    from tests.conftest import set_flags

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit checks that srun exists
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = tmp_path / "slurm.json"
    config.write_text(json.dumps({"partition": "gpu", "time_min": 30, "additional": {"constraint": "a100"}}))
    code = main(["run", "--methods", "center", "--datasets", "synth-objects", "--seeds", "0,1", "--budget", "smoke",
                 "--data-root", str(shared_dirs["data"]), "--cache-dir", str(tmp_path / "cache"),
                 "--results", str(tmp_path / "lb" / "results"), "--launcher", "slurm", "--slurm-config", str(config),
                 "--gpus-per-task", "1", "--no-wait",
                 *[x for f in set_flags() for x in ("--set", f) if f.startswith("synth-objects")]])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "submitted 2 cells as a job array" in out
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --time=30", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --constraint=a100", "#SBATCH --cpus-per-task=8"):
        assert line in script, line
    assert list((tmp_path / "lb" / "submitit").glob("*.pkl"))  # one pickled task per cell, read by the nodes


def test_auto_jobs_one_worker_per_core_or_gpu_never_more_than_the_cells(monkeypatch):
    import torch

    from bench import launch

    monkeypatch.setattr(launch, "usable_cores", lambda: 2)
    assert launch.auto_jobs(torch.device("cpu"), cells=126) == 2
    assert launch.auto_jobs(torch.device("cpu"), cells=1) == 1
    assert launch.auto_jobs(torch.device("cpu"), cells=0) == 1
    monkeypatch.setattr(launch, "usable_cores", lambda: 64)
    assert launch.auto_jobs(torch.device("cpu"), cells=126) == launch.MAX_AUTO_CPU_JOBS
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert launch.auto_jobs(torch.device("cuda"), cells=126) == 4
    assert launch.auto_jobs(torch.device("cuda"), cells=3) == 3
    assert launch.auto_jobs(torch.device("cuda:1"), cells=126) == 1  # a named GPU: one worker on it
    # CPU cells run on one thread unless told otherwise (metrics independent of --jobs and cores)
    assert launch.default_cell_threads(torch.device("cpu")) == 1
    assert launch.default_cell_threads(torch.device("cuda")) is None


def test_cli_jobs_flag_takes_a_number_or_auto():
    from bench.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "--all"]).jobs is None  # auto
    assert parser.parse_args(["run", "--all", "--jobs", "auto"]).jobs is None
    assert parser.parse_args(["run", "--all", "--jobs", "3"]).jobs == 3
    for bad in ("0", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args(["run", "--all", "--jobs", bad])
