#!/usr/bin/env bash
# Data-parallel benchmark of docs/BENCHMARKS.md (run on an otherwise idle machine):
# the same global batch trained by 1 process x T threads and by P processes x 1 thread
# (c10d Gloo over 127.0.0.1), for the small and the large hyperprior.
# Usage: scripts/bench_ddp.sh [STEPS_SMALL] [STEPS_LARGE]  -> one JSON line per run on stdout
# Each line: steady-state images/s and all-reduce ms per step (mean over the logging
# windows after the first, which holds start-up and the first table builds).
set -euo pipefail
cd "$(dirname "$0")/.."
LIC=${LIC:-build/lic}
STEPS_SMALL=${1:-60}
STEPS_LARGE=${2:-12}
P=${PROCS:-2}
T=${THREADS:-2}
PORT=${MASTER_PORT:-29517}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# mean of images_per_s / allreduce_s over the train rows of metrics.jsonl, first row dropped
summarise() {  # name procs threads run_dir
  /usr/bin/python3 - "$@" <<'EOF'
import json, sys
name, procs, threads, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = [json.loads(l) for l in open(run + "/metrics.jsonl")]
rows = [r for r in rows if r.get("split") == "train"][1:]
ips = sum(r["images_per_s"] for r in rows) / len(rows)
out = {"config": name, "processes": procs, "threads_per_process": threads,
       "windows": len(rows), "images_per_s": round(ips, 2)}
if procs > 1:
    out["allreduce_ms_per_step"] = round(1e3 * sum(r["allreduce_s"] for r in rows) / len(rows), 1)
print(json.dumps(out))
EOF
}

run() {  # name steps log_every global_batch patch N M
  local name=$1 steps=$2 every=$3 gb=$4 patch=$5 n=$6 m=$7
  local common=(--model hyperprior --N "$n" --M "$m" --data data/train --val data/val --patch "$patch"
                --steps "$steps" --log-every "$every" --val-every 1000000 --ckpt-every 1000000 --seed 0)
  "$LIC" train "${common[@]}" --batch-size "$gb" --threads "$T" --out "$tmp/$name-1x$T" >"$tmp/$name-1.log" 2>&1
  summarise "$name" 1 "$T" "$tmp/$name-1x$T"
  local pids=()
  for ((r = 0; r < P; r++)); do
    "$LIC" train "${common[@]}" --batch-size $((gb / P)) --threads 1 --out "$tmp/$name-${P}x1" \
      --world-size "$P" --rank "$r" --master-addr 127.0.0.1 --master-port "$PORT" >"$tmp/$name-r$r.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  summarise "$name" "$P" 1 "$tmp/$name-${P}x1"
  PORT=$((PORT + 1))
}

run "hyperprior N=64 M=96, global batch 8, 128^2" "$STEPS_SMALL" 10 8 128 64 96
run "hyperprior N=128 M=192, global batch 8, 256^2" "$STEPS_LARGE" 3 8 256 128 192
