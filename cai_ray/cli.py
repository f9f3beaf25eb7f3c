"""The ``cai-ray`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from pydantic import BaseModel, ValidationError

from cai_ray.extras import explain, require
from cai_ray.io import storage
from cai_ray.io.codecs import ChangedInputError
from cai_ray.io.layout import OutputBusyError, OutputMismatchError
from cai_ray.io.settings import load_settings
from cai_ray.pipeline.console import JobError

# torch is imported only by the commands that need it
PROGRESS_LOGGER = "cai_ray.pipeline.progress"
DESCRIPTION = "cai-ray injects real defects into normal images to train anomaly detectors."


def _daad_build(args: argparse.Namespace) -> int:
    from cai_ray.daad.builders import DaadSpec, build_daad

    index = build_daad(DaadSpec.from_yaml(args.spec), args.data_root, args.out)
    report = index["report"]
    shards = len(index["shards"])
    print(f"DAAD {index['name']!r}: {report['records']} records in {shards} shard(s) -> {args.out}")
    print(f"  by class:  {report['by_class']}")
    print(f"  by domain: {report['by_domain']}")
    if report["by_tag"]:
        print(f"  by tag:    {report['by_tag']}")
    if report["dropped_regions"]:
        print(f"  dropped:   {report['dropped_regions']} regions below min_region_pixels")
    if report["unmapped_labels"]:
        print(f"  background (labels with no class): {report['unmapped_labels']}")
    print(f"  skipped:   {report['skipped_count']} {report['skipped_by_reason']}")
    for item in report["skipped"][: args.show_skipped]:
        print(f"    {item['path']}: {item['reason']}")
    if report["skipped_count"] > args.show_skipped:
        print(f"    ... all {report['skipped_count']} are listed in {args.out}/daad.json")
    return 0


def _daad_stats(args: argparse.Namespace) -> int:
    from cai_ray.daad.stats import daad_stats, format_stats

    stats = daad_stats(args.daad, reference_size=args.reference_size)
    print(json.dumps(stats, indent=2) if args.json else f"DAAD {args.daad}: {format_stats(stats)}")
    return 0


def _daad_preview(args: argparse.Namespace) -> int:
    from cai_ray.daad.preview import contact_sheet
    from cai_ray.io.png import encode_png

    out = args.out or storage.join(args.daad, "preview.png")
    sheet = contact_sheet(args.daad, per_class=args.per_class, cell=args.cell)
    storage.write_bytes_atomic(out, encode_png(sheet))
    print(f"preview of {args.daad}: a row per class, {args.per_class} patterns each -> {out}")
    return 0


def _inputs_list(args: argparse.Namespace) -> int:
    import tempfile

    from cai_ray.io.inputs import write_list

    if not args.out.endswith(".parquet"):
        raise ValueError(f"--out {args.out}: an input list is a .parquet file")
    with tempfile.TemporaryDirectory(prefix="cai-ray-inputs-") as folder:
        local = f"{folder}/inputs.parquet"
        listing = write_list(args.sources, local)
        storage.put_file_atomic(local, args.out)
    print(
        f"{listing.count} inputs -> {args.out}; {listing.unlisted.total} files left out "
        f"(not images), {listing.duplicates} named more than once (listed once)"
    )
    for skip in listing.unlisted[: args.show_skipped]:
        print(f"  left out {skip['path']}: {skip['reason']}")
    return 0


def _size(count: float) -> str:
    return next(
        f"{count / scale:.3g} {unit}"
        for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB"), (1, "bytes"))
        if count >= scale or unit == "bytes"
    )


def _print_dry_run(config_path: str, out: str, report: dict) -> None:
    targets, per_target = report["targets"], report["samples_per_target"]
    print(f"dry run of {config_path} into {out}: nothing made, nothing written")
    print(
        f"  inputs: {targets} targets in {report['shards']} shards of "
        f"{report['targets_per_shard']}, keys relative to {report['inputs_root']} "
        f"({report['unlisted_inputs']} files left out, {report['duplicate_inputs']} named twice)"
    )
    probe = report["probe"]
    if "error" in probe:
        print(
            f"  samples: up to {targets * per_target} ({per_target} a target); no probe: "
            f"{probe['error']}"
        )
    elif len(probe["skipped_inputs"]) == probe["inputs"]:
        first = probe["skipped_inputs"][0]
        print(
            f"  samples: up to {targets * per_target} ({per_target} a target); the first "
            f"{probe['inputs']} inputs were all skipped, e.g. {first['path']}: {first['reason']}"
        )
    else:
        n = probe["inputs"]
        views, samples, size = probe["views"] / n, probe["samples"] / n, probe["bytes"] / n
        for skip in probe["skipped_inputs"]:
            print(f"  probe: skipped {skip['path']}: {skip['reason']}")
        print(
            f"  samples: about {round(targets * samples)} ({views:g} target(s) an input, "
            f"{per_target} samples a target, as the first {n} inputs gave)"
        )
        print(
            f"  bytes: about {_size(targets * size)} ({_size(size)} an input, "
            f"from the shards the first {n} inputs made here)"
        )
    if report["refused"]:
        print(f"  resume: refused, {out} holds another job ({report['refused']})")
    elif report["committed"]:
        left = report["shards"] - report["committed"]
        print(f"  resume: {report['committed']} shards committed (skipped), {left} to make")
    else:
        print(f"  resume: nothing committed in {out}; all {report['shards']} shards to make")


def _synth(args: argparse.Namespace) -> int:
    from cai_ray.config import load_config
    from cai_ray.io.inputs import LEFT_OUT_NAMED
    from cai_ray.pipeline.synth import dry_run, run_synth

    config = load_config(args.config, out=args.out)
    if config.storage.endpoint_url is None:
        config.storage.endpoint_url = args.s3_endpoint_url
    if args.local:
        config.resources.executor = "local"
    if args.dry_run:
        _print_dry_run(args.config, config.output.path, dry_run(config, relist=args.relist))
        return 0
    manifest = run_synth(
        config, show_progress=not args.no_progress, verbose=args.verbose, relist=args.relist
    )
    out = config.output.path
    shards = len(manifest["shards"])
    if manifest["samples"] == 0 and manifest["complete"]:
        skipped = manifest["skipped_inputs"]
        shown = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
        failed = manifest["failed_samples"]
        why = (
            f"all {len(skipped)} inputs were skipped ({shown}{'; ...' if len(skipped) > 3 else ''})"
            if not failed
            else f"{len(failed)} samples failed, e.g. {failed[0]}"
        )
        print(f"cai-ray: error: no samples in {out}: {why}", file=sys.stderr)
        return 1
    if manifest["shards_made"] == 0:
        print(
            f"nothing to do: {shards} of {shards} shards committed in {out} "
            f"({manifest['samples']} samples); check with: cai-ray verify {out}"
        )
        return 0
    print(f"{manifest['samples']} samples in {shards} shard(s) -> {out}")
    if not config.inputs.geometry.one_view_per_image:  # crops or tiles
        print(f"  {manifest['views']} targets cut from {manifest['targets']} input images")
    print(f"  counts: {json.dumps(manifest['counts'])}")
    causes = manifest["failed_by_cause"]
    by_cause = f" ({', '.join(f'{n} {cause}' for cause, n in causes.items())})" if causes else ""
    left_out = manifest.get("left_out_inputs", 0)  # the first LEFT_OUT_NAMED listed
    skipped = len(manifest["skipped_inputs"]) + left_out - min(left_out, LEFT_OUT_NAMED)
    print(
        f"  skipped inputs: {skipped}, "
        f"failed samples: {len(manifest['failed_samples'])}{by_cause}, "
        f"damaged DAAD records: {len(manifest['damaged_sources'])} (reasons in manifest.json)"
    )
    if manifest["storage_retries_made"]:
        print(
            f"  object-store requests retried: {manifest['storage_retries_made']} (throttling, "
            "dropped connections or an outage, waited out)"
        )
    print(f"  preview: {out}/preview.png; check with: cai-ray verify {out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from cai_ray.io.layout import MANIFEST_FILE, shard_name
    from cai_ray.pipeline.verify import repair_output, verify_output

    shown = 0

    def show(problem: str) -> None:
        nonlocal shown
        if shown < args.show:
            print(f"PROBLEM {problem}", flush=True)
        shown += 1

    check = repair_output if args.repair else verify_output
    report = check(
        args.out, workers=args.workers, on_problem=show, show_progress=not args.no_progress
    )
    if report.count > args.show:
        print(f"... and {report.count - args.show} more")
    status = "OK" if report.ok else "FAILED"
    print(
        f"{status}: {report.shards} shard(s), {report.samples} samples, {report.count} problem(s)"
    )
    damaged = len(report.damaged)
    if damaged:
        names = ", ".join(shard_name(i) for i in report.damaged[:5])
        names += f" and {damaged - 5} more" if damaged > 5 else ""
        if args.repair:
            print(
                f"removed {damaged} damaged shard(s) ({names}), each its tar and entry, and "
                f"{MANIFEST_FILE}: running the job's 'cai-ray synth --config ...' again now "
                "rewrites them (the same bytes) and sums the manifest afresh"
            )
        else:
            print(
                f"{damaged} damaged shard(s) ({names}): 'cai-ray verify {args.out} --repair' "
                "removes them, then the job's 'cai-ray synth --config ...' rewrites them (a "
                "run reads no tar, so it cannot tell a damaged shard from a whole one)"
            )
    return 0 if report.ok else 1


def _train(
    args: argparse.Namespace,
    loop: Callable[..., dict],
    config: BaseModel,
    dataset: Callable[[], Any] | None = None,
) -> dict:
    """Run a training loop here (on the GPU if any) or, with --workers, on Ray Train, handing
    it ``dataset()`` where the loop reads a Ray Data dataset; return the final state (read back
    from the checkpoint after Ray Train)."""
    import torch

    if args.workers:
        from cai_ray.train.runner import train_on_ray

        train_on_ray(
            loop,
            config,
            num_workers=args.workers,
            use_gpu=args.gpu,
            storage_options={"endpoint_url": args.s3_endpoint_url},
            dataset=dataset() if dataset else None,
            cpus_per_worker=args.cpus_per_worker,
        )
        return {}
    epochs = config.model_dump()["epochs"]
    return loop(
        config,
        "cuda" if torch.cuda.is_available() else "cpu",
        on_epoch=lambda s: print(f"epoch {s['epoch']}/{epochs}: loss {s['losses'][-1]:.5f}"),
    )


def _detector_train(args: argparse.Namespace) -> int:
    require("train", ("torch",), "the detector")
    from cai_ray.detector.train import (
        DetectorConfig,
        checkpoint_url,
        read_checkpoint,
        train_detector,
        training_dataset,
    )

    config = load_settings(args.config, DetectorConfig, "detector config")
    dataset = partial(training_dataset, config) if config.ingest == "ray_data" else None
    state = _train(args, train_detector, config, dataset) or read_checkpoint(checkpoint_url(config))
    print(f"trained {state['epoch']} epochs, final loss {state['losses'][-1]:.5f}")
    print(f"  checkpoint: {checkpoint_url(config)}")
    return 0


def _cdm_train(args: argparse.Namespace) -> int:
    require("cdm", ("torch", "diffusers"), "the CDM")
    from cai_ray.cdm.train import CDMConfig, read_state, train_cdm

    config = load_settings(args.config, CDMConfig, "CDM config")
    state = _train(args, train_cdm, config) or read_state(config.checkpoint_dir) or {}
    print(f"trained {state['epoch']} epochs, final loss {state['losses'][-1]:.5f}")
    print(f"  model (diffusers format): {config.checkpoint_dir}/unet")
    return 0


def _detector_eval(args: argparse.Namespace) -> int:
    require("train", ("torch",), "the detector")
    from cai_ray.detector.evaluate import evaluate_checkpoint
    from cai_ray.detector.target_specs import load_target_spec
    from cai_ray.detector.target_splits import load_target_split

    split = load_target_split(load_target_spec(args.test), args.data_root)
    print(json.dumps(evaluate_checkpoint(args.checkpoint, split), indent=2))
    if split.skipped:
        print(f"  skipped {len(split.skipped)} test image(s): first {split.skipped[0]}")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    require("bench", ("torch", "matplotlib"), "the benchmark")
    from cai_ray.benchmark.config import load_benchmark_config
    from cai_ray.benchmark.run import run_benchmark

    config = load_benchmark_config(args.config)
    summary = run_benchmark(config, only=args.only, seeds=args.seed)
    print(summary["table"])
    if summary["missing"]:
        missing = summary["missing"]
        print(f"  {len(missing)} run(s) not in the table yet: {', '.join(missing)}")
    print(f"  report: {config.out}/results.md, results.csv, curves.png, bars_*.png, examples.png")
    return 0


def _global_options(*, top_level: bool) -> argparse.ArgumentParser:
    """Options accepted before or after the subcommand (jobs/ scripts put them after)."""
    options = argparse.ArgumentParser(add_help=False)
    # after the subcommand, an option left out must not reset one given before it
    default: dict = {} if top_level else {"default": argparse.SUPPRESS}
    options.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log details, and show Ray's own log lines (kept in Ray's log folder otherwise)",
        **default,
    )
    options.add_argument(
        "--s3-endpoint-url",
        help="S3-compatible endpoint for s3:// paths (default: AWS_ENDPOINT_URL or the profile's)",
        **default,
    )
    return options


def _copy(args: argparse.Namespace) -> int:
    written = storage.copy_folder(args.source, args.destination)
    print(f"copied {written} new file(s) from {args.source} to {args.destination}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from cai_ray.io.export import COCO_FILE, ExportConfig, ShardDone, export_output
    from cai_ray.io.layout import shard_name

    if args.shards is not None and args.shards < 1:
        raise ValueError(f"--shards must be at least 1, got {args.shards}")
    options = {
        "category": args.category,
        "test_normals": args.test_normals,
        "coco_instances": args.coco_instances,
    }
    try:
        settings = ExportConfig.model_validate(
            {"format": args.format} | {k: v for k, v in options.items() if v is not None}
        )
    except ValidationError as exc:
        problems = [
            (f"--{str(error['loc'][0]).replace('_', '-')}: " if error["loc"] else "") + error["msg"]
            for error in exc.errors()
        ]
        raise ValueError(f"export: {'; '.join(problems)}") from exc

    def progress(shard: ShardDone) -> None:
        print(
            f"  {shard.done}/{shard.total} {shard_name(shard.index)}: {shard.samples} samples "
            f"-> {shard.files} files",
            flush=True,
        )

    state = export_output(
        args.output, args.destination, settings, max_shards=args.shards, on_shard=progress
    )
    counts = state["counts"]
    made, shards = state["shards_made"], state["shards"]
    print(
        f"{counts.get('samples', 0)} samples ({counts.get('normal', 0)} normal, "
        f"{counts.get('anomalous', 0)} anomalous) in {counts.get('files', 0)} files from "
        f"{shards} shard(s) -> {args.destination} ({args.format}); {made} shard(s) exported "
        f"now, {shards - made} before"
    )
    print(f"  classes: {json.dumps(state['classes'])}")
    if args.format == "coco":
        where = storage.join(args.destination, COCO_FILE)
        print(f"  annotations: {counts.get('annotations', 0)} in {where}")
    if args.format != "coco" and not counts.get("normal"):
        print("  no normal samples (the job's output.include_normal is off): no good images")
    if not state["complete"]:
        print(
            f"  {shards} of the job's {state['source_shards']} shards exported: run this "
            "again once the job has made them all (or without --shards) to add the rest"
        )
    return 0


def _add_scaling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers", type=int, help="train with Ray Train on this many workers (default: here)"
    )
    parser.add_argument("--gpu", action="store_true", help="one GPU per Ray Train worker")
    parser.add_argument(
        "--cpus-per-worker",
        type=float,
        help="CPUs per Ray Train worker (default: 1, none with --gpu); leave some to the tasks "
        "that read a Ray Data input (detector ingest: ray_data)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cai-ray", description=DESCRIPTION, parents=[_global_options(top_level=True)]
    )
    late = [_global_options(top_level=False)]
    commands = parser.add_subparsers(dest="command", required=True)

    daad = commands.add_parser("daad", help="build and inspect a DAAD").add_subparsers(
        dest="daad_command", required=True
    )
    build = daad.add_parser("build", help="turn dataset layouts into DAAD shards", parents=late)
    build.add_argument(
        "--spec", required=True, help="YAML spec, e.g. configs/daad/shared_data.yaml"
    )
    build.add_argument("--data-root", required=True, help="folder the spec's paths are relative to")
    build.add_argument("--out", required=True, help="output folder for the DAAD")
    build.add_argument("--show-skipped", type=int, default=10, help="skips to print")
    build.set_defaults(handler=_daad_build)
    stats = daad.add_parser(
        "stats", help="counts by class, domain and source scale; near-duplicates", parents=late
    )
    stats.add_argument("daad", help="a DAAD folder")
    stats.add_argument(
        "--reference-size",
        type=int,
        default=256,
        help="target side that source scales are measured against",
    )
    stats.add_argument("--json", action="store_true", help="everything, as JSON")
    stats.set_defaults(handler=_daad_stats)
    preview = daad.add_parser(
        "preview", help="contact sheet: a row per class, patterns with masks outlined", parents=late
    )
    preview.add_argument("daad", help="a DAAD folder")
    preview.add_argument("--out", help="PNG to write (default: DAAD/preview.png)")
    preview.add_argument("--per-class", type=int, default=8, help="patterns shown per class")
    preview.add_argument("--cell", type=int, default=128, help="pixels per pattern")
    preview.set_defaults(handler=_daad_preview)

    synth = commands.add_parser("synth", help="run the CAI synthesis job on Ray", parents=late)
    synth.add_argument("--config", required=True, help="YAML job config, e.g. configs/demo.yaml")
    synth.add_argument("--out", help="output folder (overrides output.path)")
    synth.add_argument(
        "--no-progress", action="store_true", help="no progress bar or progress lines"
    )
    synth.add_argument(
        "--local",
        action="store_true",
        help="run the stages in this process, without Ray (resources.executor: local)",
    )
    synth.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (targets, shards, samples and bytes expected, what a resume would "
        "skip) without running it or writing anything",
    )
    synth.add_argument(
        "--relist",
        action="store_true",
        help="list the inputs again on a resume (by default a resume reads the input list the "
        "output keeps); inputs added, removed or changed since then make it refuse",
    )
    synth.set_defaults(handler=_synth)

    inputs = commands.add_parser("inputs", help="list a job's inputs").add_subparsers(
        dest="inputs_command", required=True
    )
    listing = inputs.add_parser(
        "list",
        help="list folders, prefixes, globs or lists once into an input list (.parquet) that "
        "jobs take as inputs.paths",
        parents=late,
    )
    listing.add_argument("sources", nargs="+", help="folders, s3:// prefixes, globs or lists")
    listing.add_argument("--out", required=True, help="the list to write (.parquet)")
    listing.add_argument("--show-skipped", type=int, default=10, help="left-out files to print")
    listing.set_defaults(handler=_inputs_list)

    copy = commands.add_parser(
        "copy", help="upload a local folder (e.g. normal images) to s3://", parents=late
    )
    copy.add_argument("source", help="local folder")
    copy.add_argument("destination", help="s3://bucket/prefix or a local folder")
    copy.set_defaults(handler=_copy)

    export = commands.add_parser(
        "export",
        help="write a synthesis output as image and mask files (anomalib's Folder, MVTec AD) "
        "or COCO instances; a rerun resumes",
        parents=late,
    )
    export.add_argument("output", help="output folder of 'cai-ray synth' (local or s3://)")
    export.add_argument("destination", help="a new or empty folder, or s3://bucket/prefix")
    export.add_argument("--format", required=True, choices=["folder", "mvtec", "coco"])
    export.add_argument("--category", help="mvtec: the category folder (default: the job's name)")
    export.add_argument(
        "--test-normals",
        type=float,
        help="mvtec: the share of normal samples put in test/good instead of train/good, "
        "picked by a hash of the key (default 0)",
    )
    export.add_argument(
        "--coco-instances",
        choices=["sample", "region"],
        help="coco: an annotation per anomalous sample (default) or per connected region",
    )
    export.add_argument(
        "--shards", type=int, help="export only the first N committed shards (a quick look)"
    )
    export.set_defaults(handler=_export)

    verify = commands.add_parser(
        "verify", help="check a synthesis output; non-zero on problems", parents=late
    )
    verify.add_argument("out", help="output folder of 'cai-ray synth'")
    verify.add_argument("--show", type=int, default=20, help="problems to print")
    verify.add_argument(
        "--workers",
        type=int,
        help="shards checked at once (default: this machine's cores + 4, at most 16; reading "
        "shards from an object store waits on the network)",
    )
    verify.add_argument(
        "--no-progress", action="store_true", help="no progress bar or progress lines"
    )
    verify.add_argument(
        "--repair",
        action="store_true",
        help="remove the damaged shards found (and the manifest) so that running the job "
        "again rewrites them; nothing else is touched",
    )
    verify.set_defaults(handler=_verify)

    detector = commands.add_parser(
        "detector", help="train and score the anomaly detector"
    ).add_subparsers(dest="detector_command", required=True)
    train = detector.add_parser(
        "train", help="train (or resume) the detector on synthesis outputs", parents=late
    )
    train.add_argument("--config", required=True, help="YAML, e.g. configs/detector/demo.yaml")
    _add_scaling_options(train)
    train.set_defaults(handler=_detector_train)
    evaluate = detector.add_parser(
        "eval", help="score a checkpoint on a target's real test defects", parents=late
    )
    evaluate.add_argument("--checkpoint", required=True, help="last.pt of a training run")
    evaluate.add_argument("--test", required=True, help="target spec YAML (configs/targets/)")
    evaluate.add_argument("--data-root", required=True, help="folder the spec is relative to")
    evaluate.set_defaults(handler=_detector_eval)

    cdm = commands.add_parser(
        "cdm", help="the CAI-guided diffusion model (sample it with a synth job, method: cdm)"
    ).add_subparsers(dest="cdm_command", required=True)
    cdm_train = cdm.add_parser(
        "train", help="train (or resume) the CDM on CAI synthesis outputs", parents=late
    )
    cdm_train.add_argument("--config", required=True, help="YAML, e.g. configs/cdm/demo.yaml")
    _add_scaling_options(cdm_train)
    cdm_train.set_defaults(handler=_cdm_train)

    benchmark = commands.add_parser(
        "benchmark",
        help="synthesise with each synthesizer, train, score, and report",
        parents=late,
    )
    benchmark.add_argument("--config", required=True, help="e.g. configs/benchmark/demo.yaml")
    benchmark.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this synthesizer (repeatable); the report merges every finished run",
    )
    benchmark.add_argument(
        "--seed", action="append", type=int, help="run only this seed of the config's (repeatable)"
    )
    benchmark.set_defaults(handler=_benchmark)
    return parser


class _LogFormatter(logging.Formatter):
    """Log records in full; progress records (shown without -v, where there is no terminal for
    a bar) as plain "12:00:30 synth: 3/40 shards ..." lines."""

    plain = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if record.name == PROGRESS_LOGGER:
            return self.plain.format(record)
        return super().format(record)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.INFO)
    storage.configure(endpoint_url=args.s3_endpoint_url)
    try:
        return int(args.handler(args))
    except ModuleNotFoundError as exc:
        print(f"cai-ray: error: {explain(exc)}", file=sys.stderr)
        return 2
    except (
        OSError,
        ValueError,
        OutputMismatchError,
        OutputBusyError,
        ImportError,
        JobError,
        ChangedInputError,
    ) as exc:
        print(f"cai-ray: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
