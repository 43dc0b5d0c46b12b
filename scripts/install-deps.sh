#!/usr/bin/env bash
# Installs what the exporter and its tests need on a fresh Debian machine:
# the real components the tests drive (Debian packages), the Python venv, and the real vLLM
# (CPU build, its own venv) with the tiny model it serves (scripts/vllm/install.sh).
# Idempotent: does nothing that is already there.
#   PYTHON_ONLY=1  only the venv (make run): no Debian package, no vLLM
#   WITH_VLLM=0    everything but the real vLLM (make test installs it after the other tests)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# binary -> the Debian package that ships it
declare -A PACKAGE_OF=(
  [redis-server]=redis-server
  [prometheus]=prometheus
  [promtool]=prometheus
  [prometheus-alertmanager]=prometheus-alertmanager
  [amtool]=prometheus-alertmanager
  [openssl]=openssl
  [curl]=curl
  [chromium]=chromium
  # the long-term store of a fleet and its rule evaluator (tests/test_fleet_scale.py)
  [victoria-metrics]=victoria-metrics
  [vmalert]=victoria-metrics
  # The benchmarks' peers and load generator: `make bench`, and the test that runs every
  # benchmark in its quick mode.
  [wrk]=wrk
  [prometheus-node-exporter]=prometheus-node-exporter
  [prometheus-process-exporter]=prometheus-process-exporter
)

missing=()
# PYTHON_ONLY=1 (make run): the exporter itself needs no Debian package, only the venv.
[ "${PYTHON_ONLY:-0}" = 1 ] && PACKAGE_OF=()
for binary in "${!PACKAGE_OF[@]}"; do
  command -v "$binary" >/dev/null 2>&1 || [ -x "/usr/bin/$binary" ] || missing+=("${PACKAGE_OF[$binary]}")
done
# The forensics tests also run stuck services under Debian's own (stripped) python3.11: by its
# path, as a python3.11 on PATH may be another build.
[ "${PYTHON_ONLY:-0}" = 1 ] || [ -x /usr/bin/python3.11 ] || missing+=(python3.11-minimal)
if [ ${#missing[@]} -gt 0 ]; then
  packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: $packages(run as root, or: sudo apt-get install -y $packages)" >&2
    exit 1
  fi
  echo "installing Debian packages: $packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # The venv's own pip installs the project (editable, from pyproject) as it is; upgrading it first
  # cost a download on every fresh clone. pip's cache keeps the wheels between clones.
  "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi

# The real engine the contract tests run (several GB, minutes the first time; cached after).
[ "${PYTHON_ONLY:-0}" = 1 ] || [ "${WITH_VLLM:-1}" = 0 ] || PYTHON="$PYTHON" scripts/vllm/install.sh
