#!/usr/bin/python3
"""Plot training curves from a run's metrics.csv.

Usage: /usr/bin/python3 scripts/plot_metrics.py RUN_DIR/metrics.csv -o train.png [--title T]

Columns used (missing ones are ignored): step (required), loss, bpp, ce, entropy, kl, psnr.
Panels: loss; bpp / ce / entropy (same axes, bits per pixel); kl; psnr. If a "split" column
exists, rows with split == "val" are drawn as markers, all other rows as lines. Empty or
non-numeric cells are skipped. Exits with status 1 and one message on a missing or invalid
file.
"""
import argparse
import csv
import math
import os
import sys

from plot_common import InputError, error, prog_name, pyplot, save

PANELS = [
    ("loss", ["loss"]),
    ("rate [bpp]", ["bpp", "ce", "entropy"]),
    ("kl", ["kl"]),
    ("PSNR [dB]", ["psnr"]),
]


def to_float(s):
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def load(path):
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise InputError(f"{path}: empty file (no CSV header)")
            fields = [h.strip() for h in reader.fieldnames]
            reader.fieldnames = fields
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot read CSV: {e}")
    if "step" not in fields:
        raise InputError(f"{path}: no \"step\" column (header: {','.join(fields)})")
    wanted = [c for _, cols in PANELS for c in cols if c in fields]
    if not wanted:
        raise InputError(f"{path}: none of the columns loss, bpp, ce, entropy, kl, psnr")
    has_split = "split" in fields
    series = {}  # (column, is_val) -> ([steps], [values])
    for row in rows:
        step = to_float(row.get("step"))
        if step is None:
            continue
        is_val = has_split and (row.get("split") or "").strip().lower() == "val"
        for c in wanted:
            v = to_float(row.get(c))
            if v is not None:
                xs, ys = series.setdefault((c, is_val), ([], []))
                xs.append(step)
                ys.append(v)
    if not series:
        raise InputError(f"{path}: no numeric data rows")
    return series


def main(argv=None):
    ap = argparse.ArgumentParser(description="Plot training metrics (metrics.csv) against step.")
    ap.add_argument("csv", help="metrics.csv of a training run")
    ap.add_argument("-o", "--output", required=True, help="output image (png, pdf, svg...)")
    ap.add_argument("--title", default=None, help="figure title (default: the run directory)")
    args = ap.parse_args(argv)
    prog = prog_name("plot_metrics.py")

    try:
        series = load(args.csv)
    except InputError as e:
        return error(prog, e)

    plt = pyplot(prog)
    if plt is None:
        return 1

    panels = [(t, [c for c in cols if (c, False) in series or (c, True) in series]) for t, cols in PANELS]
    panels = [(t, cols) for t, cols in panels if cols]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, (title, cols) in zip(axes[:, 0], panels):
        for c in cols:
            color = None
            if (c, False) in series:
                xs, ys = series[(c, False)]
                order = sorted(range(len(xs)), key=xs.__getitem__)
                line, = ax.plot([xs[i] for i in order], [ys[i] for i in order], linewidth=1.0, label=c)
                color = line.get_color()
            if (c, True) in series:
                xs, ys = series[(c, True)]
                ax.plot(xs, ys, linestyle="none", marker="o", markersize=5, color=color, label=f"{c} (val)")
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[-1, 0].set_xlabel("step")
    title = args.title or os.path.basename(os.path.dirname(os.path.abspath(args.csv)))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, args.output, prog, 120)


if __name__ == "__main__":
    sys.exit(main())
