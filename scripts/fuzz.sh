#!/usr/bin/env bash
# Fuzzes the .lic decoder: builds tests/fuzz/fuzz_decode.cpp with clang, libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer in build-fuzz/ and runs it for SECONDS
# (default 600). Usage: scripts/fuzz.sh [SECONDS] [extra libFuzzer flags...]
#
# Working corpus: build-fuzz/corpus = the committed seeds (tests/fuzz/corpus) + seeds freshly
# encoded with the fuzzer's models (so they still match after a model change) + whatever
# earlier runs found. Crashes, timeouts and OOMs go to build-fuzz/artifacts/; replay one with
#   build-fuzz/tests/fuzz/lic_fuzz_decode build-fuzz/artifacts/crash-...
# Prints the executions count and the number of findings; exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-600}
shift || true
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${JOBS:-2}
MAX_LEN=${FUZZ_MAX_LEN:-4096}  # the seeds are 60..300 bytes; room for longer streams
TIMEOUT=${FUZZ_TIMEOUT:-10}     # seconds per input; a decode takes milliseconds

command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (apt-get install clang libclang-rt-dev)" >&2; exit 1; }
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  # The library is instrumented for coverage (fuzzer-no-link) and sanitized; only the fuzz
  # target is linked with libFuzzer's main. UB aborts (no recover) so libFuzzer sees it.
  CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DLIC_FUZZ=ON -DLIC_BUILD_TESTS=OFF \
    -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
fi
cmake --build "$BUILD_DIR" -j "$JOBS" --target lic_fuzz_decode

FUZZER="$BUILD_DIR/tests/fuzz/lic_fuzz_decode"
CORPUS="$BUILD_DIR/corpus"
ARTIFACTS="$BUILD_DIR/artifacts"
mkdir -p "$CORPUS" "$ARTIFACTS"
cp -n tests/fuzz/corpus/*.lic "$CORPUS"/ 2>/dev/null || true

# Leak detection stays on: LibTorch's lazily created globals are still reachable, so
# LeakSanitizer does not report them; a leak per input in our decoder would be a finding.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1

LIC_FUZZ_WRITE_CORPUS="$BUILD_DIR/seeds" "$FUZZER" >/dev/null
cp "$BUILD_DIR"/seeds/*.lic "$CORPUS"/

before=$(find "$ARTIFACTS" -type f | wc -l)
LOG="$BUILD_DIR/fuzz.log"
echo "fuzz.sh: running $FUZZER for ${DURATION}s (log: $LOG)"
set +e
"$FUZZER" -max_total_time="$DURATION" -max_len="$MAX_LEN" -timeout="$TIMEOUT" -rss_limit_mb=4096 \
  -print_final_stats=1 -artifact_prefix="$ARTIFACTS/" "$@" "$CORPUS" >"$LOG" 2>&1
rc=$?
set -e
after=$(find "$ARTIFACTS" -type f | wc -l)
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$LOG" | tail -1 | grep -o '[0-9]*$' || true)
if [[ -z "$execs" ]]; then  # no final stats (killed by a crash): the last status line
  execs=$(grep -o '^#[0-9]*' "$LOG" | tail -1 | tr -d '#' || true)
fi
corpus_size=$(find "$CORPUS" -type f | wc -l)
grep -E '^Done [0-9]+ runs' "$LOG" | tail -1 || true
echo "fuzz.sh: ${DURATION}s, execs: ${execs:-?}, findings: $((after - before)), corpus: $corpus_size files, exit code $rc"
if [[ $rc -ne 0 || $after -ne $before ]]; then
  tail -n 60 "$LOG" >&2
  echo "fuzz.sh: FAILED, see $ARTIFACTS and $LOG" >&2
  exit 1
fi
