#!/usr/bin/env bash
# One command for a newcomer: install dependencies, build, then `moetier demo`: what this
# machine is, whether the full 671B DeepSeek V3.2 would run here (and if not, what is short),
# and a measured run of the built-in demo model streaming experts from disk, beside the
# planner's prediction. PROMPT=... and N=... set the demo's prompt and length; other flags
# (--json FILE, --quiet, --expert-share X; see `moetier demo --help`) are passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
ARGS=()
[ -n "${PROMPT:-}" ] && ARGS+=(--prompt "$PROMPT")
[ -n "${N:-}" ] && ARGS+=(-n "$N")
exec ./build/moetier demo "${ARGS[@]}" "$@"
