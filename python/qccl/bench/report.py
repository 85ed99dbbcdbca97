"""Writes a benchmark run's rows: a table on stdout, CSV, JSON and PNG plots."""

import csv
import json
import os

COLUMNS = [
    "collective", "backend", "device", "ranks", "size", "count", "type", "redop", "time_us",
    "algbw_GBps", "busbw_GBps", "wire_bytes_per_rank", "rel_error", "vs_gloo", "bound_us",
    "samples",
]


def add_ratios(rows):
    """vs_gloo: Gloo's time over this row's time for the same collective and size (> 1 is
    faster than Gloo); None where Gloo was not measured."""
    gloo = {(r["collective"], r["size"]): r["time_us"] for r in rows if r["backend"] == "gloo"}
    for r in rows:
        reference = gloo.get((r["collective"], r["size"]))
        r["vs_gloo"] = reference / r["time_us"] if reference else None
    return rows


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _cell(value, width, digits):
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, float):
        return f"{value:>{width}.{digits}g}"
    return f"{value:>{width}}"


def format_table(rows, header_lines) -> str:
    """nccl-tests style: one block per collective, one line per size and backend."""
    lines = [f"# {line}" for line in header_lines]
    spec = [
        ("size", "size", 10), ("count", "count", 11), ("type", "type", 8), ("redop", "redop", 5),
        ("backend", "backend", 10), ("time_us", "time(us)", 11), ("algbw_GBps", "algbw(GB/s)", 11),
        ("busbw_GBps", "busbw(GB/s)", 11), ("wire_bytes_per_rank", "wire(B/rank)", 12),
        ("rel_error", "rel_err", 9), ("vs_gloo", "vs_gloo", 7), ("bound_us", "bound(us)", 10),
    ]
    for collective in dict.fromkeys(r["collective"] for r in rows):
        lines.append("")
        lines.append(f"# {collective}")
        lines.append(" ".join(f"{title:>{width}}" for _, title, width in spec))
        for r in (r for r in rows if r["collective"] == collective):
            cells = []
            for key, _, width in spec:
                value = human_bytes(r[key]) if key == "size" else r[key]
                cells.append(_cell(value, width, 2 if key == "vs_gloo" else 4))
            lines.append(" ".join(cells))
    return "\n".join(lines)


def write_files(rows, metadata, out_dir) -> list[str]:
    """results.csv, results.json (rows plus how they were measured) and one PNG per
    collective (busbw against size) when matplotlib is installed; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, "results.csv"), os.path.join(out_dir, "results.json")]
    with open(paths[0], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with open(paths[1], "w") as f:
        json.dump({"metadata": metadata, "rows": rows}, f, indent=1)
    return paths + plot(rows, metadata, out_dir)


def plot(rows, metadata, out_dir) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("qccl.bench: matplotlib is not installed, no plots (pip install matplotlib)")
        return []
    paths = []
    for collective in dict.fromkeys(r["collective"] for r in rows):
        mine = [r for r in rows if r["collective"] == collective]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for backend in dict.fromkeys(r["backend"] for r in mine):
            points = [(r["size"], r["busbw_GBps"]) for r in mine if r["backend"] == backend]
            ax.plot(*zip(*points), marker="o", label=backend)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("size per rank (bytes)")
        ax.set_ylabel("bus bandwidth (GB/s)")
        ax.set_title(f"{collective}, {metadata['ranks']} ranks, {metadata['network']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out_dir, f"{collective}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
