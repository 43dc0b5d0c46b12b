"""Environment snapshots of a service (its interpreter's packages, CUDA, variables, model file
hashes) and what changed between two: take.py takes and files them, probe.py is the program the
service's interpreter runs, diff.py compares two."""

from .diff import DRIFT_COMPONENTS, diff_snapshots, drift_components
from .take import read_snapshot, take_snapshot, write_snapshot

__all__ = [
    "DRIFT_COMPONENTS",
    "diff_snapshots",
    "drift_components",
    "read_snapshot",
    "take_snapshot",
    "write_snapshot",
]
