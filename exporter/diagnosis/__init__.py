"""The verdict: for each user-facing service, the cause its chain names, since when, and the
history of what changed.

It knows nothing of how facts were gathered. Every layer's module turns typed facts into links
(client.py, service.py, dependencies.py, resources.py, stall.py, exporterlinks.py), each with the
evidence and the next command a human would run to confirm it:

- a client probe cannot connect → the network: refused because the process is dead, because
  nothing listens on the port, or because the service listens elsewhere (judged on readings of
  the same moment); a connect timeout points at a firewall, routing or a full accept queue;
- it connects but fails, or still waits after `forensics.hang_after` → the symptom;
- the service, its dependencies, the machine, stalls, stack captures, the exporter → causes.

ranking.py picks the cause: the most specific broken link that broke first, the machine as a
whole only when nothing about the service explains the symptom. tracker.py believes a new state
only once it held for `diagnosis.confirm_readings` readings of its own collector; deriver.py
does all of it once per publish, and exposition.py serves it as metrics and JSON.
"""

from .chain import diagnose
from .chains import Chains, chains_of
from .deriver import Diagnoser
from .exposition import DIAGNOSIS_METRICS, to_dict, verdict_families
from .model import LAYERS, REASONS, ChainVerdict, Change, Diagnosis, Link

__all__ = [
    "DIAGNOSIS_METRICS",
    "LAYERS",
    "REASONS",
    "ChainVerdict",
    "Chains",
    "Change",
    "Diagnoser",
    "Diagnosis",
    "Link",
    "chains_of",
    "diagnose",
    "to_dict",
    "verdict_families",
]
