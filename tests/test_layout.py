"""The layering of the package: plugins see only the method and dataset APIs and the shared
libraries, and no lower layer imports a higher one; docs the code cites exist in this repository."""
import ast
import re
import subprocess
from pathlib import Path

import pytest

from bench.registry import REPO_ROOT

SHARED_LIBRARIES = ("bench.cams", "bench.ops", "bench.losses", "bench.models", "bench.metrics")
PLUGIN_APIS = {"methods": ("bench.method", "bench.dataset", *SHARED_LIBRARIES),
               "datasets": ("bench.dataset",),
               "adaptations": ("bench.transfer", "bench.method", *SHARED_LIBRARIES)}
# package -> the bench packages it must never import (the layers above it)
HIGHER = ("bench.grid", "bench.runner", "bench.launch", "bench.cli", "bench.submit", "bench.sweep",
          "bench.leaderboard", "bench.report", "bench.transfer")
FORBIDDEN = {
    "bench/data": ("bench.dataset", "bench.method", *HIGHER),
    "bench/dataset": ("bench.method", "bench.cams", "bench.ops", "bench.losses", "bench.models", *HIGHER),
    "bench/cams": ("bench.method", *HIGHER),
    "bench/ops": ("bench.method", "bench.cams", "bench.losses", "bench.models", "bench.metrics", *HIGHER),
    "bench/metrics": ("bench.method", "bench.models", "bench.losses", *HIGHER),
    "bench/losses": ("bench.method", "bench.cams", "bench.models", *HIGHER),
    "bench/models": ("bench.method", "bench.dataset", "bench.cams", *HIGHER),
    "bench/method": HIGHER,
}


def _bench_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return [n for n in names if n == "bench" or n.startswith("bench.")]


def _within(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("folder", sorted(PLUGIN_APIS))
def test_plugin_files_import_only_their_apis_and_the_shared_libraries(folder):
    files = sorted((REPO_ROOT / folder).glob("*.py"))
    assert files
    for path in files:
        for name in _bench_imports(path):
            assert _within(name, PLUGIN_APIS[folder]), f"{path.name} imports {name}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_lower_layer_imports_a_higher_one(package):
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        for name in _bench_imports(path):
            allowed = package.replace("/", ".") in name  # its own modules
            assert allowed or not _within(name, FORBIDDEN[package]), f"{path.relative_to(REPO_ROOT)} imports {name}"


def test_the_protocol_facts_live_in_this_repository():
    assert (REPO_ROOT / "docs" / "protocol.md").is_file()
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("needs a git checkout to list the tracked files (git ls-files printed nothing)")
    cites = re.compile(r"PROTOCOL\.md|\b[Ii]ssues? #?\d+\b")
    offenders = []
    for rel in tracked:
        path = REPO_ROOT / rel
        if path.suffix in (".py", ".md", ".sh", ".toml", ".cpp", ".cu", ".h", ".cuh") and path.is_file():
            if cites.search(path.read_text(errors="replace")):
                offenders.append(rel)
    assert offenders == []
