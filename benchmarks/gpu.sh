#!/usr/bin/env bash
# Switch-KD step at paper size on one GPU (H200: a few minutes); --tiny runs on CPU in seconds.
#   benchmarks/gpu.sh [--tiny] [--checkpointing] [--batch 8] [--json out.json]
# Needs only python with torch and transformers ($PYTHON, default python3). See gpu_step.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python3}" "$here/gpu_step.py" "$@"
