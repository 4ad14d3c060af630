"""The documentation: README is a front door, every link resolves, every module is listed."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "RESULTS.md", *sorted((REPO / "docs").glob("*.md"))]


def test_readme_is_a_front_door() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move details to docs/"
    quick = lines.index("## Quick start")
    block = lines[quick : lines.index("```", lines.index("```bash", quick) + 1)]
    assert [line.split()[:2] for line in block if line.startswith("make ")] == [
        ["make", "run"], ["make", "test"],
    ]  # fmt: skip


def test_every_relative_link_resolves() -> None:
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not broken, broken


def test_every_package_module_is_in_the_architecture_page() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"^\| `([^`]+)` \|", text.split("## Every module", 1)[1], re.M))
    package = REPO / "src" / "poisonscan"
    modules = set()
    for f in package.rglob("*.py"):
        parts = f.relative_to(package).with_suffix("").parts
        if parts == ("__init__",):
            modules.add("poisonscan")
        elif parts[-1] == "__init__":
            modules.add("/".join(parts[:-1]) + "/")
        else:
            modules.add("/".join(parts))
    assert modules <= listed, sorted(modules - listed)
