#!/usr/bin/env bash
# The measurements of docs/BENCHMARKS.md (run on an otherwise idle machine).
# Usage: scripts/bench.sh [KODAK_IMAGE]   -> JSON lines on stdout
set -euo pipefail
cd "$(dirname "$0")/.."
LIC=${LIC:-build/lic}
IMG=${1:-../shared/datasets/kodak/kodim01.png}
T=${THREADS:-2}
$LIC bench train --model hyperprior --N 64 --M 96 --batch-size 8 --patch 128 --steps 20 --threads "$T"
$LIC bench train --model hyperprior --N 64 --M 96 --batch-size 8 --patch 128 --steps 20 --threads "$T" --no-stats
$LIC bench train --model hyperprior --N 128 --M 192 --batch-size 8 --patch 256 --steps 5 --threads "$T"
# A hyperprior N=128 M=192 for the codec timing (weights after one step: speed does not
# depend on training, only on sizes).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$LIC train --model hyperprior --N 128 --M 192 --data data/train --patch 256 --batch-size 1 --steps 1 \
  --out "$tmp/run" --threads "$T" >/dev/null 2>&1
$LIC bench codec --model "$tmp/run/last.ckpt" --image "$IMG" --repeat 3 --threads "$T"
