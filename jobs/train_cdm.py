"""Ray job entry point: train the CAI-guided diffusion model on CAI output with Ray Train.

    ray job submit --working-dir . -- python -m jobs.train_cdm \
        --config s3://bucket/configs/cdm.yaml --workers 4 --gpu
"""

import sys

from cai_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["cdm", "train", *sys.argv[1:]]))
