"""``accel memory``: plot and summarise what ``MemoryTracker`` recorded in a run directory.

Reads every ``memory-rank*.json`` of the directory (one per rank). matplotlib is needed only for
``plot`` and imported only there, so the core does not depend on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..memory_tracker import FILE_GLOB, FILE_PREFIX, SERIES

MIB = 1024 * 1024
PLOT_INSTALL_HINT = "pip install matplotlib (or pip install 'accelerate-core[plot]')"
_REQUIRED_KEYS = ("metadata", "timestamps", "series", "peaks")
_LINESTYLES = {"cpu_rss": "-", "device_allocated": "--", "device_reserved": ":"}


class MemoryRunError(Exception):
    """The run directory cannot be read; the message says why and what to do."""


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "memory", help="plot or summarise memory recorded by MemoryTracker"
    )
    parser.set_defaults(run=lambda args: _usage(parser))
    sub = parser.add_subparsers(dest="memory_command", metavar="{plot,summary}")

    plot = sub.add_parser("plot", help="one figure: a line per rank and series, peaks annotated")
    plot.add_argument("run_dir", metavar="RUN_DIR", help="directory with memory-rank*.json")
    plot.add_argument(
        "-o", "--output", help="image to write (default: RUN_DIR/memory.png); .png, .svg, .pdf"
    )
    plot.set_defaults(run=run_plot)

    summary = sub.add_parser("summary", help="print the peaks of every rank and series")
    summary.add_argument("run_dir", metavar="RUN_DIR", help="directory with memory-rank*.json")
    summary.set_defaults(run=run_summary)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _fail(message: str) -> int:
    print(f"accel memory: error: {message}", file=sys.stderr)
    return 1


def load_run(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every rank's record in ``run_dir``, sorted by rank; ``MemoryRunError`` if unreadable."""
    path = Path(run_dir)
    if not path.exists():
        raise MemoryRunError(f"run directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise MemoryRunError(f"{str(path)!r} is not a directory; pass the run directory")
    files = sorted(path.glob(FILE_GLOB))
    files = [f for f in files if f.name.removeprefix(FILE_PREFIX).removesuffix(".json").isdigit()]
    if not files:
        raise MemoryRunError(
            f"no {FILE_GLOB} files in {str(path)!r}; record them with "
            "accelerate_core.memory_tracker.track_memory(run_dir) (one file per rank)"
        )
    records = [_read_record(f) for f in files]
    return sorted(records, key=lambda r: r["metadata"]["rank"])


def _read_record(file: Path) -> dict[str, Any]:
    try:
        record = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise MemoryRunError(f"cannot read {file}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise MemoryRunError(
            f"{file} is not valid JSON ({exc}); was the run killed while writing it?"
        ) from exc
    if not isinstance(record, dict) or any(k not in record for k in _REQUIRED_KEYS):
        raise MemoryRunError(
            f"{file} is not a MemoryTracker record: it needs the keys {', '.join(_REQUIRED_KEYS)}"
        )
    timestamps, series = record["timestamps"], record["series"]
    if not isinstance(record["metadata"], dict) or "rank" not in record["metadata"]:
        raise MemoryRunError(f"{file} has no metadata.rank")
    if not isinstance(series, dict) or any(
        not isinstance(v, list) or len(v) != len(timestamps) for v in series.values()
    ):
        raise MemoryRunError(f"{file}: every series must have one value per timestamp")
    return record


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


def summary_rows(records: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(rank, series, sampled peak MiB, exact peak MiB) for every rank and series."""
    rows = []
    for record in records:
        rank = str(record["metadata"]["rank"])
        for name in _ordered(record["series"]):
            peak = record["peaks"].get(name, {})
            rows.append((rank, name, _mib(peak.get("sampled")), _mib(peak.get("exact"))))
    return rows


def _ordered(series: dict[str, Any]) -> list[str]:
    return [n for n in SERIES if n in series] + sorted(n for n in series if n not in SERIES)


def run_summary(args: argparse.Namespace) -> int:
    try:
        records = load_run(args.run_dir)
    except MemoryRunError as exc:
        return _fail(str(exc))
    header = ("rank", "series", "sampled peak MiB", "exact peak MiB")
    rows = summary_rows(records)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    aligns = ("<", "<", ">", ">")

    def line(row: tuple[str, ...]) -> str:
        cells = (f"{c:{a}{w}}" for c, a, w in zip(row, aligns, widths))
        return "  ".join(cells).rstrip()

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    for record in records:
        meta = record["metadata"]
        if meta.get("error"):
            print(f"rank {meta['rank']}: tracking stopped early: {meta['error']}")
    print(
        "exact peaks are the process's high-water marks (getrusage ru_maxrss, device "
        "max_allocated), which can predate the tracked window"
    )
    return 0


def plot_run(records: list[dict[str, Any]], output: Path, title: str) -> Path:
    """Draw every rank's series in one figure and save it (Agg, no display needed)."""
    try:
        import matplotlib  # noqa: F401  (the parent first: a clear error when it is missing)
    except ImportError as exc:
        raise MemoryRunError(f"`accel memory plot` needs matplotlib; {PLOT_INSTALL_HINT}") from exc
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(records))]  # one colour per rank
    for record, color in zip(records, colors):
        rank = record["metadata"]["rank"]
        times = record["timestamps"]
        for name in _ordered(record["series"]):
            values = [v / MIB for v in record["series"][name]]
            if not values:
                continue
            ax.plot(
                times,
                values,
                color=color,
                linestyle=_LINESTYLES.get(name, "-."),
                label=f"rank {rank} {name}",
            )
            at = max(range(len(values)), key=values.__getitem__)
            exact = record["peaks"].get(name, {}).get("exact")
            text = f"{values[at]:.0f} MiB"
            if exact is not None:
                text += f" (exact {exact / MIB:.0f})"
            ax.plot([times[at]], [values[at]], marker="o", color=color)
            ax.annotate(
                text,
                (times[at], values[at]),
                textcoords="offset points",
                xytext=(4, 6),
                fontsize=8,
                color=color,
            )
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("memory (MiB)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    return output


def run_plot(args: argparse.Namespace) -> int:
    try:
        records = load_run(args.run_dir)
        output = Path(args.output) if args.output else Path(args.run_dir) / "memory.png"
        labels = sorted({str(r["metadata"].get("label")) for r in records} - {"None"})
        title = f"memory: {Path(args.run_dir).resolve().name}" + (
            f" ({', '.join(labels)})" if labels else ""
        )
        plot_run(records, output, title)
    except MemoryRunError as exc:
        return _fail(str(exc))
    except (OSError, ValueError) as exc:  # unwritable output, unknown image format
        return _fail(f"cannot write the plot to {args.output or 'RUN_DIR/memory.png'}: {exc}")
    print(f"wrote {output}")
    return 0
