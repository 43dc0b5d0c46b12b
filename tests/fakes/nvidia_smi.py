"""A fake nvidia-smi: `python nvidia_smi.py SCENARIO [nvidia-smi arguments]`.

Answers `--query-gpu=FIELDS --format=csv,noheader,nounits` and
`--query-compute-apps=gpu_uuid,pid,used_memory --format=csv,noheader,nounits` the way nvidia-smi
does: one line per GPU, values in the order asked, ", " between them, no units, `[N/A]`-style
brackets for what it cannot tell. Like the real one it rejects the whole query when one field name
is unknown (`Field "x" is not a valid field to query.`, exit 2).

Scenarios:
  normal        two GPUs, every field answered; two compute processes
  na            the same GPUs with [N/A], [Not Supported], [Insufficient Permissions] fields
  garbage       a GPU line whose memory.used is not a number
  short         a GPU line with fields missing
  legacy        an older nvidia-smi: knows only the pre-R525 field names
  no_driver     the driver is not loaded (nvidia-smi's message, exit 9)
  hang          never answers (sleeps until killed)
  apps_garbage  GPUs answer; the compute-apps query prints garbage
"""

from __future__ import annotations

import sys
import time

MIB = 1
GPUS = [
    {
        "index": "0",
        "uuid": "GPU-aaaaaaaa-1111-2222-3333-000000000000",
        "name": "NVIDIA A100-SXM4-80GB",
        "driver_version": "535.104.05",
        "compute_cap": "8.0",
        "pstate": "P0",
        "memory.total": "81920",
        "memory.used": "60000",
        "memory.free": "21408",
        "memory.reserved": "512",
        "utilization.gpu": "93",
        "utilization.memory": "55",
        "temperature.gpu": "67",
        "power.draw": "301.25",
        "enforced.power.limit": "400.00",
        "clocks.current.sm": "1410",
        "clocks.current.memory": "1593",
        "clocks_event_reasons.active": "0x0000000000000004",
        "ecc.errors.corrected.volatile.total": "5",
        "ecc.errors.uncorrected.volatile.total": "0",
        "remapped_rows.correctable": "1",
        "remapped_rows.uncorrectable": "0",
        "remapped_rows.pending": "No",
        "remapped_rows.failure": "No",
    },
    {
        "index": "1",
        "uuid": "GPU-bbbbbbbb-1111-2222-3333-000000000001",
        "name": "NVIDIA A100-SXM4-80GB",
        "driver_version": "535.104.05",
        "compute_cap": "8.0",
        "pstate": "P8",
        "memory.total": "81920",
        "memory.used": "4",
        "memory.free": "81404",
        "memory.reserved": "512",
        "utilization.gpu": "0",
        "utilization.memory": "0",
        "temperature.gpu": "31",
        "power.draw": "61.50",
        "enforced.power.limit": "400.00",
        "clocks.current.sm": "210",
        "clocks.current.memory": "1593",
        "clocks_event_reasons.active": "0x0000000000000001",
        "ecc.errors.corrected.volatile.total": "0",
        "ecc.errors.uncorrected.volatile.total": "0",
        "remapped_rows.correctable": "0",
        "remapped_rows.uncorrectable": "0",
        "remapped_rows.pending": "No",
        "remapped_rows.failure": "No",
    },
]
# Older names (and aliases both versions accept) for the same values.
LEGACY_ALIASES = {
    "clocks.sm": "clocks.current.sm",
    "clocks.mem": "clocks.current.memory",
    "clocks_throttle_reasons.active": "clocks_event_reasons.active",
}
MODERN_ONLY = {
    "compute_cap",
    "memory.reserved",
    "clocks_event_reasons.active",
    "remapped_rows.correctable",
    "remapped_rows.uncorrectable",
    "remapped_rows.pending",
    "remapped_rows.failure",
}
NA_FIELDS = {
    "power.draw": "[N/A]",
    "enforced.power.limit": "[Not Supported]",
    "ecc.errors.corrected.volatile.total": "[N/A]",
    "ecc.errors.uncorrected.volatile.total": "[N/A]",
    "remapped_rows.correctable": "[N/A]",
    "remapped_rows.uncorrectable": "[N/A]",
    "remapped_rows.pending": "[N/A]",
    "remapped_rows.failure": "[N/A]",
    "clocks_event_reasons.active": "[Insufficient Permissions]",
    "memory.reserved": "[N/A]",
    "pstate": "[Unknown Error]",
}
APPS = [
    ("GPU-aaaaaaaa-1111-2222-3333-000000000000", "4242", "59000"),
    ("GPU-aaaaaaaa-1111-2222-3333-000000000000", "4343", "[N/A]"),
]
NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)


def main(argv: list[str]) -> int:
    scenario, args = argv[0], argv[1:]
    if scenario == "hang":
        while True:
            time.sleep(60)
    if scenario == "no_driver":
        sys.stdout.write(NO_DRIVER)
        return 9
    if "--format=csv,noheader,nounits" not in args:
        sys.stderr.write("fake nvidia-smi: expected --format=csv,noheader,nounits\n")
        return 2
    gpu_query = next((a.split("=", 1)[1] for a in args if a.startswith("--query-gpu=")), None)
    apps_query = next((a.split("=", 1)[1] for a in args if a.startswith("--query-compute-apps=")), None)
    if apps_query is not None:
        if apps_query != "gpu_uuid,pid,used_memory":
            sys.stdout.write(f'Field "{apps_query}" is not a valid field to query.\n\n')
            return 2
        if scenario == "apps_garbage":
            sys.stdout.write("this is not, csv at all, really, no\n")
            return 0
        for row in APPS:
            sys.stdout.write(", ".join(row) + "\n")
        return 0
    if gpu_query is None:
        sys.stderr.write("fake nvidia-smi: only --query-gpu and --query-compute-apps are faked\n")
        return 2
    fields = gpu_query.split(",")
    for name in fields:
        known = name in GPUS[0] or name in LEGACY_ALIASES
        if not known or (scenario == "legacy" and name in MODERN_ONLY):
            sys.stdout.write(f'Field "{name}" is not a valid field to query.\n\n')
            return 2
    for gpu in GPUS:
        values = []
        for name in fields:
            value = gpu[LEGACY_ALIASES.get(name, name)]
            if scenario == "na":
                value = NA_FIELDS.get(LEGACY_ALIASES.get(name, name), value)
            if scenario == "garbage" and name == "memory.used":
                value = "lots"
            values.append(value)
        if scenario == "short":
            values = values[:3]
        sys.stdout.write(", ".join(values) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
