#!/usr/bin/env bash
# One command for the whole test suite: install dependencies, build, run every test (unit
# tests, fuzzers, end-to-end checks against the independent NumPy reference) through CTest,
# then the concurrency stress, fault-injection and parser-fuzz tests again under
# AddressSanitizer + UBSan (MOETIER_SKIP_ASAN=1 skips that second pass), then every parser under
# coverage-guided fuzzing (libFuzzer, clang, ASan + UBSan) for MOETIER_FUZZ_SECONDS each
# (default 60; 0 skips it), failing on any finding (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
bash scripts/build.sh
cmake -S . -B build >/dev/null  # a build configured before .venv existed (the demo's) now takes it
JOBS=${JOBS:-$(nproc)}
(cd build && ctest --output-on-failure -j "$JOBS" "$@")

if [ "${MOETIER_SKIP_ASAN:-0}" != 1 ]; then
  ASAN_TARGETS=(test_offload_cache test_offload_loader test_offload_store fuzz_safetensors fuzz_store_manifest fuzz_config
                fuzz_profile fuzz_activations fuzz_placement fuzz_tokenizer_json fuzz_cli_values
                fuzz_safetensors_index test_planner_solver test_planner_profile test_planner_activations
                test_backend_ops test_gpu_layout fuzz_api_request test_server_api_request test_server_output_parser
                fuzz_gguf test_weights_gguf_writer test_kernels_ggml_gemv test_kernels_ggml_tiles)
  GEN=()
  command -v ninja >/dev/null && GEN=(-G Ninja)
  [ -f build-asan/CMakeCache.txt ] || cmake -S . -B build-asan "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DMOETIER_SANITIZE=ON -DMOETIER_CUDA=OFF >/dev/null
  cmake --build build-asan -j "$JOBS" --target "${ASAN_TARGETS[@]}"
  regex="^($(IFS='|'; echo "${ASAN_TARGETS[*]}"))$"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      ctest --output-on-failure -j "$JOBS" -R "$regex")
fi

if [ "${MOETIER_FUZZ_SECONDS:-60}" != 0 ]; then
  bash scripts/fuzz.sh "${MOETIER_FUZZ_SECONDS:-60}"
fi
