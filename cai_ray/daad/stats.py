"""What a DAAD holds: counts by class, domain, tag and source scale, and near-duplicate images.

Read from the records table alone (no shard is opened), so it is quick on a DAAD of any size.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from cai_ray.core.duplicates import MIN_CORRELATION, near_duplicate_groups
from cai_ray.core.geometry import Scale, scale_classes
from cai_ray.daad.shards import read_index, read_records_table, record_tags

SCALES = [Scale.LARGE.label, Scale.MEDIUM.label, Scale.SMALL.label, Scale.TRIVIAL.label]


def _duplicates(table) -> dict:  # noqa: ANN001 - a pyarrow Table
    """Near-duplicate source images (one entry per image file, however many records it gave)."""
    paths = table["path"].to_pylist()
    first: dict[str, int] = {}
    for row, path in enumerate(paths):
        first.setdefault(path, row)
    rows = np.fromiter(first.values(), np.int64, len(first))
    prints = np.frombuffer(b"".join(table["fingerprint"].take(rows).to_pylist()), np.int8)
    heights = table["height"].to_numpy()[rows].astype(np.float64)
    widths = table["width"].to_numpy()[rows].astype(np.float64)
    ratios = np.maximum(heights, widths) / np.minimum(heights, widths)
    groups = near_duplicate_groups(prints.reshape(len(rows), -1), ratios)
    records = Counter(paths)
    names = list(first)
    listed = [[names[i] for i in group] for group in groups]
    return {
        "min_correlation": MIN_CORRELATION,
        "images": len(names),
        "groups": len(groups),
        "extra_copies": sum(len(group) - 1 for group in groups),
        "records_from_extra_copies": sum(records[path] for group in listed for path in group[1:]),
        "listed": listed,
    }


def daad_stats(daad: str, *, reference_size: int = 256) -> dict:
    """Counts per class, domain, tag and source scale, and near-duplicate images. A record
    counts once under each of its tags; ``untagged`` counts records without any (all of a DAAD
    older than format 5).

    Source scale is a pattern's class against a ``reference_size`` square target whose whole
    image is foreground: what it can make on a default target (trivial patterns are never used).
    """
    index = read_index(daad)
    table = read_records_table(daad, index, min_version=3, needed_for="daad stats")
    sides = np.maximum(
        table["y1"].to_numpy() - table["y0"].to_numpy(),
        table["x1"].to_numpy() - table["x0"].to_numpy(),
    )
    scales = [Scale(int(c)).label for c in scale_classes(sides / reference_size)]
    classes = table["anomaly_class"].to_pylist()
    domains = table["domain"].to_pylist()
    tags = record_tags(table)
    tagged = [(tag, domain) for row, domain in zip(tags, domains, strict=True) for tag in row]
    return {
        "records": table.num_rows,
        "reference_size": reference_size,
        "by_class": dict(sorted(Counter(classes).items())),
        "by_domain": dict(sorted(Counter(domains).items())),
        "by_tag": dict(sorted(Counter(tag for tag, _ in tagged).items())),
        "untagged": sum(1 for row in tags if not row),
        "by_tag_and_domain": _nested(tagged),
        "by_source_scale": dict(sorted(Counter(scales).items())),
        "by_class_and_scale": _nested(zip(classes, scales, strict=True)),
        "by_domain_and_class": _nested(zip(domains, classes, strict=True)),
        "near_duplicates": _duplicates(table),
    }


def _nested(pairs) -> dict[str, dict[str, int]]:  # noqa: ANN001 - an iterable of pairs
    counts: dict[str, Counter[str]] = {}
    for row, column in pairs:
        counts.setdefault(row, Counter())[column] += 1
    return {row: dict(sorted(counts[row].items())) for row in sorted(counts)}


def _table(title: str, rows: dict[str, dict[str, int]], columns: list[str]) -> list[str]:
    header = ["", *columns, "total"]
    body = [
        [row, *(str(counts.get(c, 0) or "-") for c in columns), str(sum(counts.values()))]
        for row, counts in rows.items()
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        aligned = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  " + "  ".join([cells[0].ljust(widths[0]), *aligned])

    return [title, render(header), *(render(line) for line in body)]


def format_stats(stats: dict, *, show_duplicates: int = 10) -> str:
    """The statistics as a reader wants them: two tables and the duplicate groups."""
    size = stats["reference_size"]
    domains = sorted(stats["by_domain"])
    classes = sorted(stats["by_class"])
    lines = [
        f"{stats['records']} records, {len(classes)} classes, {len(domains)} domains",
        "",
        *_table(
            f"class x source scale (what each pattern can make on a {size}x{size} target that "
            "is all foreground; trivial ones are never used):",
            stats["by_class_and_scale"],
            [s for s in SCALES if s in stats["by_source_scale"]],
        ),
        "",
        *_table("domain x class:", stats["by_domain_and_class"], classes),
        "",
    ]
    if stats["by_tag"]:
        tag_domains = sorted({d for row in stats["by_tag_and_domain"].values() for d in row})
        title = (
            f"tag x domain (daad.exclude_tags leaves tagged records out; "
            f"{stats['untagged']} records untagged):"
        )
        lines += [*_table(title, stats["by_tag_and_domain"], tag_domains), ""]
    else:
        lines += ["tags: none (every record untagged)", ""]
    dup = stats["near_duplicates"]
    lines.append(
        f"near-duplicate images (rotated, flipped, resized or re-encoded copies; fingerprint "
        f"correlation >= {dup['min_correlation']}): {dup['groups']} groups among "
        f"{dup['images']} images; {dup['extra_copies']} images are extra copies, giving "
        f"{dup['records_from_extra_copies']} records"
    )
    for group in dup["listed"][:show_duplicates]:
        more = f" (and {len(group) - 3} more)" if len(group) > 3 else ""
        lines.append("  " + " = ".join(group[:3]) + more)
    if dup["groups"] > show_duplicates:
        lines.append(f"  ... all {dup['groups']} groups: cai-ray daad stats --json")
    return "\n".join(lines)
