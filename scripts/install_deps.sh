#!/usr/bin/env bash
# Installs the Debian 12 packages lic needs, only those missing (idempotent).
# Usage: scripts/install_deps.sh [--test]   (--test adds what the test suite uses)
set -euo pipefail
pkgs=(build-essential cmake ninja-build git pkg-config
      libtorch-dev libopenblas0-openmp libopencv-dev libcxxopts-dev libspdlog-dev
      libyaml-cpp-dev nlohmann-json3-dev libgtest-dev libgloo-dev)
if [[ "${1:-}" == "--test" ]]; then
  # python3-torch: CompressAI interop check and torchrun; matplotlib: plots
  pkgs+=(python3-torch python3-matplotlib clang libclang-rt-14-dev)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install_deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install_deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# ConvTranspose2d is ~20x slower with the reference BLAS: make sure OpenBLAS (OpenMP) wins.
if [[ -e /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3 ]]; then
  $SUDO update-alternatives --set libblas.so.3-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3 >/dev/null 2>&1 || true
fi
