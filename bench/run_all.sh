#!/usr/bin/env bash
# Runs every bench script (bench/*.py but the _helpers), one after the other, each to its end,
# then prints the PASS/FAIL line each ended with. A script that breaks (an exception, a missing
# binary) counts as "FAIL: NAME: script error" and the next one runs all the same.
# Arguments go to every script: `bench/run_all.sh --quick` runs them all in seconds.
# The python is $PYTHON, else $VENV/bin/python (VENV defaults to the repo's .venv).
# Exit status: 0 when every script ran to its PASS/FAIL line (even a FAIL), 1 when one broke.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="${VENV:-$root/.venv}"
[[ "$venv" = /* ]] || venv="$root/$venv"
python="${PYTHON:-$venv/bin/python}"
if [[ ! -x "$python" ]]; then
    echo "bench cannot run: $python not found: create the venv and pip install -e $root" >&2
    exit 2
fi
cd "$root"
summary=()
status=0
for script in "$here"/[!_]*.py; do
    name="$(basename "$script" .py)"
    log="$(mktemp)"
    "$python" "$script" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    final="$(grep -E "^(PASS|FAIL): $name: " "$log" | tail -n 1)"
    rm -f "$log"
    if [[ $rc -ne 0 || -z "$final" ]]; then
        final="FAIL: $name: script error (exit $rc, see its output above)"
        status=1
    fi
    summary+=("$final")
    echo
done
echo "==================================== summary ===================================="
printf '%s\n' "${summary[@]}"
exit $status
