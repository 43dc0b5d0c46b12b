"""Every threshold and window the verdict judges by, in one place (windows in seconds).

The verdict (exporter/diagnosis/) reads these, and mixin/ imports them to write the alert rules and
dashboard thresholds, so a page and a verdict can never disagree about what "broken" means. Change
a number here, run `make mixin`; the drift check fails until the generated files follow.
"""

from __future__ import annotations

# --- resources of the machine and of the service's cgroup ---------------------------------------
MEMORY_LOW_RATIO = 0.05  # available memory under 5% of total
CPU_SATURATED_RATIO = 0.95  # busy share of every CPU of the machine
CONTEXT_SWITCHES_PER_CPU_STORM = 100_000.0  # per second per CPU; a quiet server sits near 1-10k
CPU_THROTTLED_RATIO = 0.25  # share of the cgroup's CFS periods throttled since the last reading
MEMORY_LIMIT_PRESSURE_RATIO = 0.90  # working set against the cgroup's memory limit

# --- GPUs ---------------------------------------------------------------------------------------
GPU_MEMORY_FULL_RATIO = 0.95
RECENT_XID_SECONDS = 600.0  # an XID event speaks for the GPU this long

# --- the service's logs and stacks --------------------------------------------------------------
RECENT_LOG_SECONDS = 300.0  # a CUDA OOM line (or another severe one) breaks the link this long
FORENSICS_RECENT_SECONDS = 900.0  # stacks older than this say nothing about the service now

# --- stalls -------------------------------------------------------------------------------------
QUEUE_GROWTH_STALL = 1  # the queue grew by at least this much since the previous reading
