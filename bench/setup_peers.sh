#!/usr/bin/env bash
# Creates bench/.venv-peers: the peer libraries for bench_peers.py (target 5), never runtime dependencies.
#
# The venv sees the system's torch/transformers (--system-site-packages), so ours and the peers run on the
# very same torch and transformers. repeng pins numpy<2, which pip installs inside the venv only.
# steering-vectors 0.12.2 declares transformers<5; installed with --no-deps it works on transformers 5.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=bench/.venv-peers
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet repeng==0.4.0
"$VENV/bin/python" -m pip install --quiet --no-deps steering-vectors==0.12.2
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch, transformers
for name in ("repeng", "steering-vectors", "numpy", "torch", "transformers"):
    print(f"{name}=={md.version(name)}")
PY
