#!/usr/bin/python3
"""Plot rate-distortion curves from eval reports.

Usage: /usr/bin/python3 scripts/plot_rd.py A.json [B.json ...] -o rd.png [--title T]

Each report (CompressAI-like):
  {"name": "hyperprior-q3", "description": "...",
   "results": {"bpp": [..], "psnr-rgb": [..], "ms-ssim-rgb": [..], ...}}
"results" values may be lists (several points) or scalars (one point). Reports that share
the same "name" (the file name is used when it is missing) are merged into one curve,
sorted by bpp. Two panels: PSNR vs bpp and MS-SSIM in dB (-10*log10(1 - v)) vs bpp.
Exits with status 1 and one message on a missing or invalid file.
"""
import argparse
import json
import math
import os
import sys

from plot_common import InputError, error, prog_name, pyplot, save

PSNR_KEYS = ("psnr-rgb", "psnr")
MSSSIM_KEYS = ("ms-ssim-rgb", "ms-ssim", "msssim")
DB_CAP = 100.0  # same cap as lic::kPsnrCap / lic::ms_ssim_db


def ms_ssim_db(v):
    if v >= 1.0:
        return DB_CAP
    return min(DB_CAP, -10.0 * math.log10(1.0 - v))


def as_list(value, key, path):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, list):
        out = []
        for v in value:
            if v is None:
                out.append(float("nan"))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append(float(v))
            else:
                raise InputError(f"{path}: results.{key} contains a non-number: {v!r}")
        return out
    raise InputError(f"{path}: results.{key} must be a number or a list of numbers")


def first_key(results, keys):
    for k in keys:
        if k in results:
            return k
    return None


def load_reports(path):
    """`lic eval --json` writes one report object, or an array of them for several curves."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        with open(path, "r", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read: {e}")
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON: {e}")
    return [report_points(path, d) for d in (doc if isinstance(doc, list) else [doc])]


def report_points(path, doc):
    """Returns (name, [(bpp, psnr or nan, msssim or nan), ...])."""
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        raise InputError(f"{path}: not an eval report (no \"results\" object)")
    res = doc["results"]
    if "bpp" not in res:
        raise InputError(f"{path}: results has no \"bpp\"")
    bpp = as_list(res["bpp"], "bpp", path)
    n = len(bpp)
    cols = []
    for keys in (PSNR_KEYS, MSSSIM_KEYS):
        k = first_key(res, keys)
        if k is None:
            cols.append([float("nan")] * n)
            continue
        vals = as_list(res[k], k, path)
        if len(vals) != n:
            raise InputError(f"{path}: results.{k} has {len(vals)} values but bpp has {n}")
        cols.append(vals)
    if all(math.isnan(v) for v in cols[0]) and all(math.isnan(v) for v in cols[1]):
        raise InputError(f"{path}: results has neither PSNR ({'/'.join(PSNR_KEYS)}) "
                         f"nor MS-SSIM ({'/'.join(MSSSIM_KEYS)})")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        name = os.path.splitext(os.path.basename(path))[0]
    pts = [(b, p, m) for b, p, m in zip(bpp, cols[0], cols[1]) if math.isfinite(b)]
    if not pts:
        raise InputError(f"{path}: no valid points")
    return name, pts


def main(argv=None):
    ap = argparse.ArgumentParser(description="Plot RD curves (PSNR and MS-SSIM vs bpp) from eval reports.")
    ap.add_argument("reports", nargs="+", help="eval report JSON files")
    ap.add_argument("-o", "--output", required=True, help="output image (png, pdf, svg...)")
    ap.add_argument("--title", default=None, help="figure title")
    args = ap.parse_args(argv)
    prog = prog_name("plot_rd.py")

    try:
        curves = {}  # name -> points, in first-seen order
        for path in args.reports:
            for name, pts in load_reports(path):
                curves.setdefault(name, []).extend(pts)
    except InputError as e:
        return error(prog, e)

    plt = pyplot(prog)
    if plt is None:
        return 1

    fig, (ax_p, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    any_p = any_m = False
    for name, pts in curves.items():
        pts = sorted(pts, key=lambda t: t[0])
        pp = [(b, p) for b, p, _ in pts if math.isfinite(p)]
        mm = [(b, ms_ssim_db(m)) for b, _, m in pts if math.isfinite(m)]
        style = dict(marker="o", markersize=4, linewidth=1.5)
        if pp:
            line, = ax_p.plot([b for b, _ in pp], [v for _, v in pp], label=name, **style)
            style["color"] = line.get_color()
            any_p = True
        if mm:
            ax_m.plot([b for b, _ in mm], [v for _, v in mm], label=name, **style)
            any_m = True
    for ax, ylabel, has in ((ax_p, "PSNR-RGB [dB]", any_p), (ax_m, "MS-SSIM-RGB [dB]", any_m)):
        ax.set_xlabel("bit rate [bpp]")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if has:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    return save(fig, args.output, prog, 130)


if __name__ == "__main__":
    sys.exit(main())
