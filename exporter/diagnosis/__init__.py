"""The verdict: a pure function from the latest facts to the first broken link of the chain.

It knows nothing of how facts were gathered. It walks the seed's flowchart:

- a client probe cannot connect → the network: refused because the process is dead, because
  nothing listens on the port, or because the service listens elsewhere; a connect timeout
  points at a firewall, routing or an overloaded accept queue;
- it connects but fails (no answer, reset, HTTP error, bad body) → look for the cause deeper in
  the chain, in order: the service's error log, its dependencies, the machine's resources, a
  stall; when none explains it, the client failure itself is the verdict;
- every probe answers → the first broken link elsewhere (a dependency down, a stall) or healthy.

Each link carries evidence lines and the next command a human would run to confirm it.
"""

from .chain import DIAGNOSIS_METRICS, Deriver, derive, diagnose, to_dict, verdict_families
from .model import LAYERS, REASONS, Diagnosis, Link

__all__ = [
    "DIAGNOSIS_METRICS",
    "LAYERS",
    "REASONS",
    "Deriver",
    "Diagnosis",
    "Link",
    "derive",
    "diagnose",
    "to_dict",
    "verdict_families",
]
