"""The comparison's plots, as SVG files: recall against latency per system (W-VEC),
latency per filter selectivity (W-HYB), and tenants against memory per tenant layout.

Called by compare.py (`--plots DIR`), or on its own from figures already measured:

    python benches/compare/plots.py --results results.json [--tenants layouts.md] --out DIR

`results.json` is what compare.py writes with `--json`; `layouts.md` is the standard
output of `cargo bench --bench remdb -- layouts`.
"""

import argparse
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

# The same file for the same figures: no date or random ids in the SVG.
matplotlib.rcParams["svg.hashsalt"] = "remdb"
# Text as text: smaller files, searchable labels.
matplotlib.rcParams["svg.fonttype"] = "none"
SVG_METADATA = {"Date": None, "Creator": None}


def read_layouts(path):
    """Rows of the layouts bench's Markdown table: {layout, tenants, rss_mib}."""
    rows, columns = [], None
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not line.startswith("|") or set(line.strip()) <= set("|-"):
                continue
            if "layout" in cells and "tenants" in cells:
                columns = cells
                continue
            if columns and len(cells) == len(columns):
                row = dict(zip(columns, cells))
                rows.append({"layout": row["layout"], "tenants": int(row["tenants"]),
                             "rss_mib": float(row["RSS after load MiB"]),
                             "open_files": int(row["open files"])})
    if not rows:
        raise SystemExit(f"{path}: no layouts table (the output of the layouts bench)")
    return rows


def _log_axis(axis):
    """A log axis labelled in plain numbers at 1, 2 and 5 of each decade."""
    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _systems(rows):
    """The systems of `rows`, in the order they first appear."""
    return list(dict.fromkeys(r["system"] for r in rows))


def _save(fig, out_dir, name):
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata=SVG_METADATA)
    plt.close(fig)
    return path


def recall_latency(wvec, out_dir, title):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system in _systems(wvec):
        points = sorted((r["p50_ms"], r["recall"], r["setting"]) for r in wvec if r["system"] == system)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=system)
        for x, y, setting in points:
            if setting != "-":
                ax.annotate(setting, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.set_xlabel("p50 latency per query, ms (log scale)")
    ax.set_ylabel("recall@10")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "recall-latency.svg")


def selectivity(label):
    """The filter's share of rows, from its label ("10% 'important' in tags" -> 0.1)."""
    match = re.match(r"([0-9.]+)%", label)
    return float(match.group(1)) / 100 if match else None


def filtered_latency(whyb, out_dir, title):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system in _systems(whyb):
        points = sorted((selectivity(r["filter"]), r["p50_ms"], r["recall"])
                        for r in whyb if r["system"] == system and selectivity(r["filter"]))
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=system)
        for x, y, rec in points:
            ax.annotate(f"{rec:.3f}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.1%}".replace(".0%", "%")))
    _log_axis(ax.yaxis)
    ax.set_xlabel("share of rows passing the filter (log scale)")
    ax.set_ylabel("p50 latency of a filtered top-10, ms (log scale)")
    ax.set_title(title + "\n(labels: recall@10)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "filtered-latency.svg")


def tenants_memory(layouts, out_dir):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for layout in sorted({r["layout"] for r in layouts}):
        points = sorted((r["tenants"], r["rss_mib"]) for r in layouts if r["layout"] == layout)
        ax.plot([p[0] for p in points], [max(p[1], 0.1) for p in points], marker="o", label=layout)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    _log_axis(ax.yaxis)
    ax.set_xlabel("tenants in one database (log scale)")
    ax.set_ylabel("RSS after loading, MiB (log scale)")
    ax.set_title("Tenants against memory per RocksDB layout (layouts bench)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "tenants-memory.svg")


def draw(report, out_dir, layouts=None):
    """Draws the plots the report has figures for; returns the files written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    if report.get("wvec"):
        written.append(recall_latency(
            [r for r in report["wvec"] if r["system"] != "exact, numpy"], out_dir,
            "W-VEC: recall against latency, top-10, one client"))
    if report.get("whyb"):
        written.append(filtered_latency(report["whyb"], out_dir,
                                        "W-HYB: filtered top-10 per selectivity, one client"))
    if layouts:
        written.append(tenants_memory(layouts, out_dir))
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", required=True, help="the JSON compare.py wrote (--json)")
    parser.add_argument("--tenants", help="the Markdown output of the layouts bench")
    parser.add_argument("--out", required=True, help="directory for the SVG files")
    args = parser.parse_args()
    with open(args.results) as f:
        report = json.load(f)
    layouts = read_layouts(args.tenants) if args.tenants else None
    for path in draw(report, args.out, layouts):
        print(path)


if __name__ == "__main__":
    main()
