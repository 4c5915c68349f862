#!/usr/bin/env bash
# Dependencies point one way (docs/architecture.md): fails, naming the line, when a module
# includes one it must not.
#   core            -> nothing of ours but core
#   backend         -> core
#   cpu_kernels     -> core, backend
#   gpu_kernels     -> core, backend; cpu_kernels only in gpu_layout.cpp (it reads the CPU
#                      blob's private code order to repack it for the GPU)
#   offload         -> core (and offload)
#   planner         -> core, config (and planner)
#   runtime/model   -> core, backend, config, weights; cpu_kernels only for ops.h (yarn_inv_freq)
#   runtime/server  -> core, engine, tokenizer, sampling (the HTTP layer over the engine)
set -uo pipefail
cd "$(dirname "$0")/.."
bad=0
forbid() {  # forbid DIR PATTERN WHY
  local hits
  hits=$(grep -rnE "#include \"($2)" "$1" --include=*.h --include=*.cuh --include=*.cpp --include=*.cu 2>/dev/null || true)
  if [ -n "$hits" ]; then echo "$hits" | sed "s|\$|   <- $3|"; bad=1; fi
}
forbid runtime/core 'runtime/(backend|config|weights|model|engine|tokenizer|sampling|server)|cpu_kernels|gpu_kernels|offload|planner|tools' "core depends on nothing"
forbid runtime/backend 'runtime/(config|weights|model|engine|tokenizer|sampling)|cpu_kernels|gpu_kernels|offload|planner|tools' "the backend interface depends on core only"
forbid cpu_kernels 'runtime/(config|weights|model|engine|tokenizer|sampling)|gpu_kernels|offload|planner|tools' "kernels know nothing of files, placement or models"
forbid gpu_kernels 'runtime/(config|weights|model|engine|tokenizer|sampling|server)|offload|planner|tools' "the GPU kernels know nothing of files, placement or models"
hits=$(grep -rnE '#include "cpu_kernels' gpu_kernels --include=*.h --include=*.cuh --include=*.cu --include=*.cpp | grep -v '^gpu_kernels/gpu_layout.cpp:' || true)
if [ -n "$hits" ]; then echo "$hits" | sed 's|$|   <- only gpu_layout.cpp reads the CPU layouts|'; bad=1; fi
forbid offload 'runtime/(backend|config|weights|model|engine|tokenizer|sampling)|cpu_kernels|gpu_kernels|planner|tools' "the store knows nothing of math"
forbid planner 'runtime/(backend|weights|model|engine|tokenizer|sampling)|cpu_kernels|gpu_kernels|offload|tools' "the planner never runs the model"
forbid runtime/model 'runtime/engine|gpu_kernels|offload|planner|tools|cpu_kernels/(attention|expert|matmul|norm|rope|reference)' "the model is a graph over the backend interface"
forbid runtime/server 'cpu_kernels|gpu_kernels|offload|planner|tools' "the server drives the engine, never a backend, the store or the planner"
if [ $bad -eq 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
exit $bad
