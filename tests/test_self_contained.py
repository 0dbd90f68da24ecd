"""The repository documents itself: no text points at files outside it, and docs links resolve.

Pure text checks (no torch import), so they run before any heavy dependency is installed.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()

# Built from pieces so that this file does not match its own patterns.
FORBIDDEN = ("." + "./shared", "DESIGN" + ".md")

# What is scanned: README.md, app.py, docs/ (*.md, *.py) and every text source of the packages.
SCANNED_DIRS = {"docs": (".md", ".py"), "crm_core": None, "demo": None, "tests": None}
TEXT_SUFFIXES = (".py", ".md", ".txt", ".ini", ".toml", ".cfg", ".json", ".yaml", ".yml", ".css", ".js", ".html")
SKIPPED_PARTS = {"__pycache__", ".pytest_cache"}

# [text](target) of inline Markdown links and images; the target stops at whitespace or ')'.
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def scanned_files() -> Iterator[Path]:
    for name in ("README.md", "app.py"):
        if (ROOT / name).is_file():
            yield ROOT / name
    for folder, suffixes in SCANNED_DIRS.items():
        base = ROOT / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if not path.is_file() or SKIPPED_PARTS & set(path.relative_to(ROOT).parts):
                continue
            if path.suffix not in (suffixes or TEXT_SUFFIXES) or path.resolve() == THIS:
                continue
            yield path


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def test_no_reference_outside_the_repository() -> None:
    hits = []
    for path in scanned_files():
        for number, line in enumerate(read_lines(path), start=1):
            for pattern in FORBIDDEN:
                if pattern in line:
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {pattern!r} in {line.strip()[:120]!r}")
    assert not hits, "text refers to files outside the repository:\n" + "\n".join(hits)


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md"] if (ROOT / "README.md").is_file() else []
    return files + sorted((ROOT / "docs").glob("*.md"))


def test_method_doc_exists_and_relative_links_resolve() -> None:
    assert (ROOT / "docs" / "method.md").is_file(), "docs/method.md is missing"
    broken = []
    for path in markdown_files():
        in_code_block = False
        for number, line in enumerate(read_lines(path), start=1):
            if line.lstrip().startswith("```"):
                in_code_block = not in_code_block
                continue
            if in_code_block:
                continue
            for target in MARKDOWN_LINK.findall(line):
                if target.startswith("#") or EXTERNAL.match(target):
                    continue
                relative = target.split("#", 1)[0]
                if not relative:
                    continue
                resolved = (path.parent / relative).resolve()
                if not resolved.exists():
                    broken.append(f"{path.relative_to(ROOT)}:{number}: {target}")
                elif ROOT not in resolved.parents and resolved != ROOT:
                    broken.append(f"{path.relative_to(ROOT)}:{number}: {target} (outside the repository)")
    assert not broken, "relative links that do not resolve:\n" + "\n".join(broken)


def test_the_readme_shows_the_compare_view() -> None:
    """README.md's picture is a screenshot of Compare that the first-visit browser test takes
    (CRM_LAB_SCREENSHOT=docs/compare.png python -m pytest tests/test_browser.py -k first_visit)."""
    import struct

    assert "![" in (ROOT / "README.md").read_text() and "(docs/compare.png)" in (ROOT / "README.md").read_text()
    data = (ROOT / "docs" / "compare.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1000 and height >= 600, (width, height)
