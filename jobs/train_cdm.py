"""Ray job entry point: train the CAI-guided diffusion model on CAI output with Ray Train.

    ray job submit --working-dir . -- python jobs/train_cdm.py \
        --config s3://bucket/configs/cdm.yaml --workers 4 --gpu
"""

import sys
from pathlib import Path

# With --working-dir the package is uploaded next to this folder but not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cai_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["cdm", "train", *sys.argv[1:]]))
