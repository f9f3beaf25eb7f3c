"""Ray job entry point: train the detector on synthesis output with Ray Train.

    ray job submit --working-dir . -- python -m jobs.train_detector \
        --config s3://bucket/configs/detector.yaml --workers 4 --gpu
"""

import sys

from cai_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["detector", "train", *sys.argv[1:]]))
