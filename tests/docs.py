"""The docs as tests read them: a page's section by its heading, a section's code blocks.

The commands and recipes the docs show are run by the tests of what they exercise; they find
them here, so a section that moves between pages is one path to change."""

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

HEADING = re.compile(r"(#+) (.*)")
FENCE = "```"


def doc_headings(page: str) -> list[tuple[int, int, str]]:
    """(line index, level, title) of each heading of ``page`` (relative to the repository), code
    blocks left out: a ``#`` comment in a shell or Python block is not a heading."""
    headings, in_code = [], False
    for index, line in enumerate((REPO / page).read_text().splitlines()):
        if line.startswith(FENCE):
            in_code = not in_code
        elif not in_code and (match := HEADING.fullmatch(line)):
            headings.append((index, len(match.group(1)), match.group(2)))
    return headings


def doc_section(page: str, heading: str) -> str:
    """The section of ``page`` whose heading starts with ``heading``: from that heading to the
    next one of its level or above (its subsections included)."""
    lines = (REPO / page).read_text().splitlines(keepends=True)
    headings = doc_headings(page)
    found = [(i, h) for i, h in enumerate(headings) if h[2].startswith(heading)]
    assert len(found) == 1, f"{page}: {len(found)} headings start with {heading!r}"
    [(position, (start, level, _))] = found
    end = next((s for s, lvl, _ in headings[position + 1 :] if lvl <= level), len(lines))
    return "".join(lines[start:end])


def code_blocks(section: str, language: str) -> list[str]:
    """The code of each ```language block in ``section``, in order."""
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def run_python(code: str, folder: Path, timeout: int) -> str:
    """``code`` (a docs recipe) run by a fresh interpreter from ``folder``, which gets the
    repository's data and configs as at its root; its stdout."""
    for name in ("data", "configs"):
        (folder / name).symlink_to(REPO / name)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
