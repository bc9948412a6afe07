#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is missing, build, train a small
# hyperprior model for a couple of minutes on data/train, evaluate it on data/val (real
# coding), and print its bpp and PSNR.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
OUT=${OUT:-runs/demo}
rm -rf "$OUT"
build/lic train --config configs/demo.yaml --out "$OUT"
build/lic eval --model "$OUT/best.ckpt" --data data/val --json "$OUT/eval.json" --name demo
/usr/bin/python3 - "$OUT/eval.json" <<'PY' 2>/dev/null || true
import json, sys
r = json.load(open(sys.argv[1]))
r = r[0] if isinstance(r, list) else r
res = r["results"]
print(f"demo model on data/val: {res['bpp'][0]:.3f} bpp (coded), {res['psnr-rgb'][0]:.2f} dB PSNR")
PY
