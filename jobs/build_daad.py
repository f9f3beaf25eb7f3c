"""Entry point for building a DAAD as a Ray job:

    ray job submit --working-dir . -- python -m jobs.build_daad \
        --spec configs/daad/shared_data.yaml --data-root ../shared/data --out out/daad-shared

Arguments are those of ``cai-ray daad build``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cai_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["daad", "build", *sys.argv[1:]]))
