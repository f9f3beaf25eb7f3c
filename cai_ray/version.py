"""What a release is, and what bytes it writes: the lowest module, which any other may import
(the package's ``__init__`` is its public face, above everything else)."""

__version__ = "0.2.0"

SAMPLES_VERSION = 3
"""The version of the bytes a job writes for a given config, inputs and seed: the output format
and all the code that shapes a sample. Bump it in any change after which the same job would
write other bytes (``tests/pipeline/test_samples_version.py`` pins the demo job's shards and
fails until it is bumped): a job's identity holds it, so a resume after such an upgrade is
refused rather than mixing two kinds of shard in one output. 1: every output written before it
existed. 3: CAI's labels as solid regions and its visibility gate."""
