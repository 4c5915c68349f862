#!/usr/bin/env bash
# On this (development) machine, before a device call: the Debian libraries the build needs,
# as .deb files in .devdeps/ (git-ignored), for a GPU machine that has no package registry
# (../shared/device/README.md). The device call carries .devdeps; scripts/gpu_check.sh
# unpacks it there. Beyond the shared list: cpp-httplib (moetier serve) and what it and
# PCRE2 (the tokenizer) link against.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .devdeps
EXTRA_DEBS="libcpp-httplib-dev libcpp-httplib0.11 libbrotli-dev libbrotli1 libssl-dev libssl3 zlib1g-dev zlib1g
libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libgomp1" \
  bash ../shared/device/fetch-debs.sh .devdeps
cp ../shared/device/use-debs.sh .devdeps/
ls .devdeps | wc -l
