#!/usr/bin/env bash
# Runs the benchmarks one after the other with the repo's venv python (diagnosis_matrix, the
# fault matrix, takes about 1.5 hours; run it alone with bench/diagnosis_matrix.py --faults ...).
# Each prints its figures and a final PASS/FAIL line; this script prints a summary of those lines.
# Not part of the unit test suite. Extra arguments are passed to rss_cycles.py (e.g. --cycles 3000).
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="$root/.venv/bin/python"
if [[ ! -x "$python" ]]; then
    echo "FAIL: $python not found: create the venv and pip install -e $root" >&2
    exit 2
fi
summary=()
status=0
for bench in metrics_throughput process_cpu probe_cycle gpu_cycle rss_cycles diagnosis_matrix; do
    args=()
    [[ "$bench" == rss_cycles ]] && args=("$@")
    log="$(mktemp)"
    "$python" "$here/$bench.py" "${args[@]}" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    final="$(grep -E "^(PASS|FAIL): $bench:" "$log" | tail -n 1)"
    rm -f "$log"
    if [[ $rc -ne 0 || -z "$final" ]]; then
        final="FAIL: $bench: script error (exit $rc)"
        status=1
    fi
    summary+=("$final")
    echo
done
echo "==================================== summary ===================================="
printf '%s\n' "${summary[@]}"
# Exit 0 when the scripts ran, even if a target failed; 1 when a script itself broke.
exit $status
