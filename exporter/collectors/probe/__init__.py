"""Client probes: the request a user would send, timed by phase, and WHY it failed when it did.

Modules (blackbox_exporter is the model): `inference` sends the seed's `POST /inference`,
`openai_chat` asks `/v1/chat/completions` for one token (optionally streamed, timing the first
token), `http` is a GET with expectations, `tcp` only connects. A health endpoint that answers
200 is not proof of life (vLLM's /health stays 200 while its engine is dead), so the defaults
probe by generating.

All targets run concurrently on one event loop, so a cycle costs the slowest probe, not the sum;
each probe has its own connect and total deadline. Every probe opens a fresh connection, as a new
client would. Failure reasons are a bounded set, so a verdict can be drawn from them.

While a probe waits it is noted in an InFlightRegistry (see ../inflight.py), so a hang is known
seconds after it began, not only when the probe times out. Every probe's duration also goes into
a histogram (failed ones at the time they failed), the base of availability and latency objectives.
Text the probed server sent (a body excerpt, a protocol error) is redacted before it is shown.

Where the parts live (in this package): one module per kind (http.py, inference.py, openai_chat.py,
tcp.py); client.py is the HTTP client and answer checks the HTTP kinds share; timing.py times the
phases; failures.py classifies what went wrong into REASONS; collector.py runs them all and keeps
the metrics.
"""

from .collector import DURATION_BUCKETS, ProbeCollector
from .failures import REASONS, ProbeFailure, classify_http_error, classify_os_error
from .timing import PHASES

__all__ = [
    "DURATION_BUCKETS",
    "PHASES",
    "REASONS",
    "ProbeCollector",
    "ProbeFailure",
    "classify_http_error",
    "classify_os_error",
]
