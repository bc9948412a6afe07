#!/usr/bin/env bash
# A rate-distortion ladder: one hyperprior per lambda, same recipe otherwise, so that
# `lic eval` + `lic bd-rate` can compare learned curves with the classic codecs.
# Usage: scripts/train_ladder.sh STEPS LAMBDA... (runs/ladder-<STEPS>-<LAMBDA>/, one after
# another; set JOBS=2 to run two at a time with one thread each)
set -euo pipefail
cd "$(dirname "$0")/.."
LIC=${LIC:-build/lic}
steps=$1
shift
drop=$((steps * 4 / 5))  # the reference recipe drops the learning rate at 80%
jobs=${JOBS:-1}
for lambda in "$@"; do
  out=runs/ladder-$steps-$lambda
  extra=()
  [[ -f $out/last.ckpt ]] && extra=(--resume)
  "$LIC" train --config configs/reference-12k.yaml --lambda "$lambda" --steps "$steps" \
    --lr-milestones "$drop" --val-every "$((steps / 2))" --out "$out" --threads 1 "${extra[@]}" \
    >"$out.log" 2>&1 &
  while (($(jobs -rp | wc -l) >= jobs)); do sleep 5; done
done
wait
