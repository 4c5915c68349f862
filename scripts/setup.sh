#!/usr/bin/env bash
# Installs what moetier builds, tests and runs its demo with, from Debian 12's packages only:
# compilers, CMake, Ninja, oneDNN (with the OpenCL headers its CMake config insists on), hwloc,
# liburing, mimalloc, OpenMP, Catch2, nlohmann-json, PCRE2, cpp-httplib, Python 3 with NumPy for
# the independent reference, and clang with its libFuzzer runtime for the coverage-guided
# fuzzing. With --tests, two test-side references from PyPI too (DESIGN.md): the official `openai`
# client, and llama.cpp's `gguf` package (the GGUF reader's independent reference), in a virtual
# environment at .venv that also sees Debian's NumPy.
# Idempotent and silent when everything is present; scripts/check_fresh_machine.sh proves the
# list complete on a new Debian root.
set -euo pipefail

PKGS=(build-essential cmake ninja-build pkg-config
      libdnnl-dev ocl-icd-opencl-dev        # dnnl-config.cmake calls find_package(OpenCL REQUIRED)
      libhwloc-dev liburing-dev libmimalloc-dev libomp-dev
      catch2 nlohmann-json3-dev libpcre2-dev
      libcpp-httplib-dev                    # moetier serve (HTTP server)
      python3 python3-numpy python3-venv
      clang libclang-rt-14-dev)             # scripts/fuzz.sh: libFuzzer + sanitizers

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: error: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  log=$(mktemp)
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
           --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    echo "setup: error: apt-get failed (output above); install these by hand: ${missing[*]}" >&2
    exit 1
  fi
  rm -f "$log"
fi

# The tests run the first interpreter on PATH that imports NumPy, else Debian's own
# (tests/CMakeLists.txt); python3-numpy serves the latter.
if ! python3 -c "import numpy" >/dev/null 2>&1 && ! /usr/bin/python3 -c "import numpy" >/dev/null 2>&1; then
  echo "setup: error: no python3 with NumPy after installing python3-numpy" >&2
  exit 1
fi

# With --tests (scripts/test.sh): the official openai client for tests/e2e/test_serve.py and the
# gguf package for tests/e2e/test_gguf.py, from PyPI, in .venv (Debian's python3 with its NumPy
# visible); the tests prefer .venv/bin/python3. The demo needs nothing from PyPI.
[ "${1:-}" = --tests ] || exit 0
cd "$(dirname "$0")/.."
GGUF_PIN="gguf==0.17.1"
if ! .venv/bin/python3 -c "import numpy, openai, gguf" >/dev/null 2>&1; then
  echo "setup: installing the openai client and $GGUF_PIN from PyPI into .venv"
  log=$(mktemp)
  if ! { /usr/bin/python3 -m venv --system-site-packages .venv &&
         .venv/bin/python3 -m pip install -q --disable-pip-version-check openai "$GGUF_PIN"; } >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    echo "setup: error: could not install the openai client and $GGUF_PIN into .venv (is PyPI reachable?)" >&2
    exit 1
  fi
  rm -f "$log"
fi
