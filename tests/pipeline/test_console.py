"""What the terminal shows: native stderr (where Ray's C++ core writes) goes to a file while our
Python-level output and logging keep the terminal."""

import subprocess
import sys

REDIRECT = """
import logging, os, sys
from pathlib import Path
from cai_ray.pipeline.console import native_stderr_to
logging.basicConfig(level=logging.INFO, format="%(message)s")
with native_stderr_to(Path(sys.argv[1])):
    os.write(2, b"E native line\\n")
    print("our progress", file=sys.stderr)
    logging.getLogger("cai_ray").info("our log line")
os.write(2, b"after\\n")
try:
    with native_stderr_to(Path(sys.argv[1])):
        raise RuntimeError("job failed")
except RuntimeError as exc:
    print(exc.__notes__[0], file=sys.stderr)
"""


def test_native_stderr_goes_to_the_file_and_ours_to_the_terminal(tmp_path):
    log = tmp_path / "ray" / "native.err"
    done = subprocess.run(
        [sys.executable, "-c", REDIRECT, str(log)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert log.read_text() == "E native line\n"
    lines = done.stderr.splitlines()
    assert lines == [
        "our progress",
        "our log line",
        "after",
        f"Ray's own messages from this run: {log}",
    ]
