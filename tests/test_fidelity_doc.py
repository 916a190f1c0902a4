"""Every registered method has its fidelity section (`## <name>`) in docs/fidelity.md: the table
of its choices against the reference implementation."""
from __future__ import annotations

import re

import pytest

from bench.registry import REPO_ROOT, all_methods

DOC = REPO_ROOT / "docs" / "fidelity.md"


def sections() -> set[str]:
    if not DOC.is_file():
        pytest.fail(f"{DOC} does not exist")
    return set(re.findall(r"^## (\S+)\s*$", DOC.read_text(), flags=re.MULTILINE))


@pytest.mark.parametrize("name", sorted(all_methods()))
def test_every_registered_method_has_a_fidelity_section(name):
    assert name in sections(), f"docs/fidelity.md has no '## {name}' section"


def test_sections_have_the_table_header():
    text = DOC.read_text()
    for name in sections():
        body = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert "| choice | reference" in body, f"docs/fidelity.md section {name} has no choice/reference table"
