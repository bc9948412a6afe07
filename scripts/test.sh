#!/usr/bin/env bash
# The whole test suite: install what is missing, build, run every test with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh --test
scripts/build.sh
(cd build && ctest --output-on-failure -j "${CTEST_JOBS:-1}" "$@")
# Then the suite again under ASan + UBSan (build-asan); LIC_SANITIZE_CI=0 skips it.
if [[ "${LIC_SANITIZE_CI:-1}" != "0" ]]; then
  scripts/test_sanitize.sh "$@"
fi
