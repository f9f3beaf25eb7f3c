"""The fault matrix of docs/RELIABILITY.md, measured: runs every test marked ``fault_matrix``
(each injects one fault into a real job and records what it measured, see tests/faultmatrix.py)
and prints the matrix as a Markdown table, a row per recorded fault, with the test's outcome and
duration.

    python bench/fault_matrix.py [--out out/fault-matrix] [-k EXPRESSION]

Needs the test extra (``pip install -e ".[test]"``: Ray, the SeaweedFS server); some rows mount a
small filesystem and are skipped, with the reason, where that is not permitted. About 15 minutes
on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHOWN_FIRST = ("samples", "lost", "duplicated", "changed", "unexpected")


def outcomes(junit: Path) -> dict[str, tuple[str, float]]:
    """Each test's outcome (passed, failed, skipped) and seconds, by test function name."""
    found = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        verdict = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                verdict = "failed"
            elif child.tag == "skipped":
                verdict = f"skipped: {child.get('message', '')}"
        found[case.get("name", "")] = (verdict, float(case.get("time", 0)))
    return found


def table(rows: list[dict], tests: dict[str, tuple[str, float]]) -> str:
    lines = [
        "| fault | samples | lost | duplicated | changed | other figures | test | outcome |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        verdict, seconds = tests.get(row["test"], ("not run", 0.0))
        other = ", ".join(
            f"{key} {value}"
            for key, value in row.items()
            if key not in ("row", "test", *SHOWN_FIRST)
        )
        counts = " | ".join(str(row.get(key, "")) for key in SHOWN_FIRST[:4])
        lines.append(
            f"| {row['row']} | {counts} | {other} | `{row['test']}` | {verdict} ({seconds:.0f} s) |"
        )
    recorded = {row["test"] for row in rows}
    for name, (verdict, seconds) in sorted(tests.items()):
        if name not in recorded:
            outcome = f"{verdict} ({seconds:.0f} s)"
            lines.append(f"| (nothing recorded) | | | | | | `{name}` | {outcome} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "out" / "fault-matrix"))
    parser.add_argument("-k", dest="expression", help="pytest -k: a subset of the rows")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures, junit = out / "figures.jsonl", out / "junit.xml"
    figures.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", "fault_matrix", "-q", f"--junitxml={junit}"]
    if args.expression:
        command += ["-k", args.expression]
    environment = {**os.environ, "CAI_RAY_FAULT_REPORT": str(figures)}
    finished = subprocess.run(command, cwd=REPO, env=environment, check=False)
    lines = figures.read_text().splitlines() if figures.exists() else []
    rows = [json.loads(line) for line in lines]
    markdown = table(rows, outcomes(junit) if junit.exists() else {})
    (out / "matrix.md").write_text(markdown + "\n")
    print(markdown)
    sys.exit(finished.returncode)


if __name__ == "__main__":
    main()
