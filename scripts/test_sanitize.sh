#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer: configures build-asan/
# with -DLIC_SANITIZE=ON (the project compiler), builds it and runs ctest there.
# Extra arguments go to ctest. Environment:
#   ASAN_BUILD_DIR   build folder (default build-asan)
#   JOBS             build jobs (default: all cores)
#   CTEST_JOBS       ctest parallelism (default 1)
#   LIC_SANITIZE_EXCLUDE  ctest -E pattern of tests skipped here (default below; "" runs all)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${ASAN_BUILD_DIR:-build-asan}
JOBS=${JOBS:-$(nproc)}

start=$(date +%s)
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  # -O1 -g: readable sanitizer stack traces, and it compiles faster than -O2/-O3.
  cmake -S . -B "$BUILD_DIR" "${gen[@]}" -DLIC_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG"
fi
cmake --build "$BUILD_DIR" -j "$JOBS"
built=$(date +%s)

# detect_leaks=0: LibTorch is not instrumented and keeps memory from its static initialisers
# (operator registry, allocator and thread pools) alive until exit without freeing it, so
# LeakSanitizer would report "leaks" at the exit of every process that touches torch, none
# of them ours. Heap overflows, use-after-free etc. are still reported.
# abort_on_error / halt_on_error: a finding fails the test (UB does not just print and go on;
# the build also uses -fno-sanitize-recover=undefined).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# Skipped here (they run in the normal build): the process-heavy tests that mostly exercise
# LibTorch (not instrumented) or the same code paths many times over, to keep CI in budget.
EXCLUDE=${LIC_SANITIZE_EXCLUDE-DecompressSurvivesMutatedFiles|SigkillAtRandomMomentsAndResume|InterruptedRunMatchesUninterrupted}
cd "$BUILD_DIR"
args=(--output-on-failure -j "${CTEST_JOBS:-1}")
[[ -n "$EXCLUDE" ]] && args+=(-E "$EXCLUDE")
ctest "${args[@]}" "$@"
done_at=$(date +%s)
echo "test_sanitize.sh: build $((built - start)) s, tests $((done_at - built)) s"
