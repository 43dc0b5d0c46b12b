"""Every threshold and window the verdict judges by, in one place (windows in seconds).

The verdict (exporter/diagnosis/) reads these, and mixin/ imports them to write the alert rules and
dashboard thresholds, so a page and a verdict can never disagree about what "broken" means. Change
a number here, run `make mixin`; the drift check fails until the generated files follow.
"""

from __future__ import annotations

# A reading is one run of a collector; at the default interval one reading is this long. Counts of
# readings below become windows in seconds for the alert rules with it.
READING_SECONDS = 10.0

# --- resources of the machine and of the service's cgroup ---------------------------------------
MEMORY_LOW_RATIO = 0.05  # available memory under 5% of total
CPU_SATURATED_RATIO = 0.95  # busy share of every CPU of the machine
CONTEXT_SWITCHES_PER_CPU_STORM = 100_000.0  # per second per CPU; a quiet server sits near 1-10k
CPU_THROTTLED_RATIO = 0.25  # share of the cgroup's CFS periods throttled since the last reading
MEMORY_LIMIT_PRESSURE_RATIO = 0.90  # working set against the cgroup's memory limit
# Host-wide pressure is the service's own (and so a cause about the service) when the service takes
# at least this share of it: its processes use this share of the busy CPUs, or of all memory.
OWN_PRESSURE_SHARE = 0.5

# --- GPUs ---------------------------------------------------------------------------------------
GPU_MEMORY_FULL_RATIO = 0.95
RECENT_XID_SECONDS = 600.0  # an XID event speaks for the GPU this long
# XID classes as operators page on them (NVIDIA's XID catalogue). The verdict breaks the GPU's link
# on a critical or warning XID; the alerts page on critical ones and warn on warning ones; XIDs the
# application causes (a bad memory access, a killed context) say nothing about the GPU: never paged.
XID_CRITICAL = (48, 62, 64, 74, 79, 95, 119, 120)  # double-bit ECC, row remap failure, NVLink,
# fell off the bus, uncontained ECC, GSP firmware
XID_WARNING = (94,)  # contained ECC error: the GPU recovered, the application using it was stopped
XID_APPLICATION = (13, 31, 43, 63, 92)
XID_LOST = 79  # the GPU fell off the bus: only a reset or a reboot brings it back
# Clock-event reasons that hold the clocks down for heat or hardware faults. sw_power_cap is left
# out: a GPU generating flat out sits at its power cap by design (the GPU dashboard still shows it).
GPU_THROTTLE_REASONS = (
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)

# --- the service's processes --------------------------------------------------------------------
# A crash loop: the service's process died young (replaced, or gone, after less than
# RESTART_LOOP_YOUNG_SECONDS) this often within the window. An operator restarting a service twice
# (a port fixed, then a config) replaces processes that served a while: not a loop.
RESTART_LOOP_RESTARTS = 2
RESTART_LOOP_WINDOW_SECONDS = 120.0
RESTART_LOOP_YOUNG_SECONDS = 60.0

# --- the service's logs and stacks --------------------------------------------------------------
RECENT_LOG_SECONDS = 300.0  # a CUDA OOM line (or another severe one) breaks the link this long
FORENSICS_RECENT_SECONDS = 900.0  # stacks older than this say nothing about the service now

# --- stalls -------------------------------------------------------------------------------------
QUEUE_GROWTH_STALL = 1  # one reading counts as growth when the depth rose by at least this much
QUEUE_GROWTH_READINGS = 3  # the depth rose at each of this many readings in a row (so 2 rises)...
QUEUE_MIN_DEPTH = 10  # ...and at least this many wait: a burst onto an idle queue is not a backlog
QUEUE_GROWTH_WINDOW_SECONDS = (QUEUE_GROWTH_READINGS - 1) * READING_SECONDS  # the alert rule's window
# An engine is stalled when requests waited and no token came at ENGINE_FLAT_READINGS readings in a
# row, the first of them at least ENGINE_STALL_WINDOW_SECONDS before the last (readings taken again
# seconds apart do not shorten it): no token for a whole window, never one flat reading. The engine
# collector's autoglm_engine_stalled is already judged over this window.
ENGINE_FLAT_READINGS = 3
ENGINE_STALL_WINDOW_SECONDS = (ENGINE_FLAT_READINGS - 1) * READING_SECONDS

# A service's worker child (vLLM's engine core) that used no CPU and made no context switch at this
# many process readings in a row, while its engine has requests, is stuck (diagnosis/workers.py).
WORKER_IDLE_READINGS = 2
# A child held by a tracer (t) or blocked in the kernel (D) at this many readings in a row is stuck
# (py-spy holds a process for a moment, I/O blocks one for a moment); one stopped by a signal (T:
# SIGSTOP) is stuck at once: it stays stopped until someone continues it. A worker that is a zombie
# at this many readings (its parent does not reap it) is dead.
WORKER_STUCK_READINGS = 2

# A service's worker is known (not a passing child such as a command it runs) once it was seen alive
# at this many readings in a row, or seen alive after running this long (an exporter started beside
# a running vLLM knows its engine core at once); dead while its parent lives, it is named
# (diagnosis/workers.py).
WORKER_SEEN_READINGS = 2
WORKER_SEEN_SECONDS = READING_SECONDS
# A worker that died while its service serves on (its port still listening) speaks for the service's
# failures this long; while its port is closed or no process of the service runs, until a restart.
DEAD_WORKER_RECENT_SECONDS = 300.0

# --- the verdict over time ------------------------------------------------------------------------
# A probe's refusal is judged against the process reading only when both were taken this close
# together (one interval plus its jitter); otherwise the verdict says the reading is stale.
SAME_CYCLE_SECONDS = 15.0
