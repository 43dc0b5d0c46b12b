"""Hang forensics: py-spy stack captures of a stuck service, their analysis, and where they are kept.

    dumps = capture(pid)                       # several `py-spy dump --json` a short interval apart
    analysis = analyse(dumps)                  # blocked / busy / running / idle threads, deadlock
    store.save(service, reason, dumps, analysis)
    profile(pid, 30, "flame.svg")              # `py-spy record` flame graph

Everything py-spy may fail at is a CaptureError with a bounded kind (CAPTURE_ERROR_KINDS).
"""

from .analysis import STATES, Analysis, ThreadReport, analyse
from .pyspy import CAPTURE_ERROR_KINDS, PTRACE_HINT, CaptureError, Dump, Frame, ThreadStack, capture, profile
from .store import CaptureNotFound, CaptureStore, LoadedCapture, StoredCapture

__all__ = [
    "CAPTURE_ERROR_KINDS",
    "PTRACE_HINT",
    "STATES",
    "Analysis",
    "CaptureError",
    "CaptureNotFound",
    "CaptureStore",
    "Dump",
    "Frame",
    "LoadedCapture",
    "StoredCapture",
    "ThreadReport",
    "ThreadStack",
    "analyse",
    "capture",
    "profile",
]
