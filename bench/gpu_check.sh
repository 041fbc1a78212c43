#!/usr/bin/env bash
# GPU check (see bench/gpu_check.py): prints one JSON object; needs no download. Extra arguments pass through,
# e.g. `bash bench/gpu_check.sh --dry-run` to check the code path on a machine without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
exec timeout 590 python bench/gpu_check.py "$@"
