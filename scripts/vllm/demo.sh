#!/usr/bin/env bash
# The demo with the real vLLM in place of the look-alike engine (demo/engine.py): on this host,
# on the ports the exporter watches by default,
#   127.0.0.1:8000  the real vLLM (CPU build) serving the tiny Llama (scripts/vllm/serve.sh)
#   127.0.0.1:6379  redis-server, unless something listens there already
#   127.0.0.1:8080  the demo's Open-AutoGLM-style API (python -m demo api), calling that vLLM
# Then watch it with `make run` (the exporter on its defaults), or with the dashboards:
# `docker compose up -d` (no demo profile: the stack watches this host's ports). Ctrl-C stops all.
#   VENV              the project's venv, for the demo api (default .venv)
#   AUTOGLM_LOG_DIR   where the api writes error.log and trace.log (default /var/log/open-autoglm,
#                     where the exporter's defaults and the compose stack read them)
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=${VENV:-.venv}
LOG_DIR=${AUTOGLM_LOG_DIR:-/var/log/open-autoglm}
mkdir -p "$LOG_DIR"

children=()
stop() {
  trap - EXIT INT TERM
  for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait
}
trap stop EXIT INT TERM

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in 8000 8080; do
  if listening "$port"; then
    echo "something listens on 127.0.0.1:$port already (the look-alike demo?): stop it first" >&2
    exit 1
  fi
done
if ! listening 6379; then
  redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no >"$LOG_DIR/redis.log" 2>&1 &
  children+=($!)
fi

VLLM_PORT=8000 scripts/vllm/serve.sh &
children+=($!)
echo "starting vLLM on 127.0.0.1:8000 (a minute or more: it compiles the model on its first start)"
until curl -sf -o /dev/null http://127.0.0.1:8000/health; do
  kill -0 "${children[-1]}" 2>/dev/null || { echo "vLLM exited" >&2; exit 1; }
  sleep 2
done

"$VENV/bin/python" -m demo api --port 8080 --engine-url http://127.0.0.1:8000 \
  --redis-url redis://127.0.0.1:6379/0 --queue autoglm:requests \
  --log-file "$LOG_DIR/error.log" --trace-file "$LOG_DIR/trace.log" &
children+=($!)
echo "ready: POST http://127.0.0.1:8080/inference goes through Redis to the real vLLM; now run \`make run\`"
wait -n
