import logging

from cai_ray.pipeline.progress import Progress, format_duration


def test_status_reports_throughput_and_eta():
    progress = Progress(4, enabled=False)
    progress.update(30)
    progress.started -= 10  # as if the first shard took 10 s
    status = progress.status()
    assert status.startswith("1/4 shards (25%), 30 samples, 3 samples/s, ETA 0m30s")
    assert format_duration(3725) == "1h02m" and format_duration(59.6) == "1m00s"


def test_without_a_terminal_it_logs_lines(caplog):
    progress = Progress(2, interval=0)
    with caplog.at_level(logging.INFO, logger="cai_ray.pipeline.progress"):
        progress.update(5)
        progress.update(5)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("synth: 1/2 shards") and "ETA" in lines[0]
    assert lines[-1].startswith("synth: 2/2 shards (100%), 10 samples")
