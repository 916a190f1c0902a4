"""`python -m bench submit`: one new method file, end to end, and its clear refusals."""
import json

import pytest

from bench import registry
from bench.cli import main
from bench.entries import check_entries
from tests.conftest import set_flags

METHOD = '''from bench.method import Localization, Method
from bench.registry import register_method


@register_method
class Brightness(Method):
    """Localizes by brightness (a test method)."""

    name = "brightness-test"

    def localize(self, images, labels):
        return Localization(images.mean(1))
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.setenv("WSOLBENCH_PLUGINS", str(folder))
    yield folder
    for name in [n for n, c in registry.METHODS.items() if str(folder) in str(getattr(c, "source_file", ""))]:
        registry.METHODS.unregister(name)


def _args(shared_dirs, tmp_path):
    return ["--budget", "smoke", "--seeds", "0", "--data-root", str(shared_dirs["data"]), "--cache-dir",
            str(shared_dirs["cache"]), "--results", str(tmp_path / "lb" / "results"),
            *[x for f in set_flags() for x in ("--set", f)]]


def test_a_new_method_file_is_submitted_end_to_end(plugin_dir, shared_dirs, tmp_path, capsys):
    path = plugin_dir / "brightness.py"
    path.write_text(METHOD)
    code = main(["submit", str(path), *_args(shared_dirs, tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "OFF-PROTOCOL submission (budget smoke; seeds 0; settings" in out
    results = tmp_path / "lb" / "results"
    image_sets = sorted(n for n, d in registry.all_datasets().items() if d.synthetic and d.in_grid and d.task == "image")
    for dataset in image_sets:
        entry = json.loads((results / dataset / "brightness-test" / "seed0.json").read_text())
        assert entry["status"] == "ok" and entry["submission"]["protocol"] is False
        assert entry["submission"]["deviations"][0] == "budget smoke"
    assert check_entries(results) == []
    assert main(["leaderboard", "--check", "--results", str(results)]) == 0
    table = (tmp_path / "lb" / "README.md").read_text()
    for dataset in image_sets:
        assert f"## {dataset}" in table
    assert table.count("| brightness-test (off-protocol: budget smoke; seeds 0; settings") == len(image_sets)
    # resubmitting resumes every finished cell
    assert main(["submit", str(path), *_args(shared_dirs, tmp_path)]) == 0
    assert f"ran 0, resumed {len(image_sets)}, failed 0" in capsys.readouterr().out


def test_a_file_without_exactly_one_method_is_refused(plugin_dir, shared_dirs, tmp_path, capsys):
    none = plugin_dir / "nothing.py"
    none.write_text("X = 1\n")
    assert main(["submit", str(none), *_args(shared_dirs, tmp_path)]) == 2
    assert f"{none}: defines no registered method" in capsys.readouterr().err
    two = plugin_dir / "two.py"
    two.write_text(METHOD + "\n\n@register_method\nclass Darkness(Brightness):\n    name = 'darkness-test'\n")
    assert main(["submit", str(two), *_args(shared_dirs, tmp_path)]) == 2
    assert "defines 2 registered methods (brightness-test, darkness-test)" in capsys.readouterr().err


def test_import_errors_name_the_line_and_outside_files_are_refused(plugin_dir, shared_dirs, tmp_path, capsys):
    broken = plugin_dir / "broken.py"
    broken.write_text("import math\n\nraise RuntimeError('bad plugin')\n")
    assert main(["submit", str(broken), *_args(shared_dirs, tmp_path)]) == 2
    assert f"{broken}:3: cannot import the plugins (RuntimeError: bad plugin)" in capsys.readouterr().err
    broken.unlink()
    outside = tmp_path / "elsewhere.py"
    outside.write_text(METHOD)
    assert main(["submit", str(outside), *_args(shared_dirs, tmp_path)]) == 2
    assert "must live in a plugin folder" in capsys.readouterr().err
