"""URLs and addresses as they may be shown: in metrics, logs, pages and verdicts."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from .redact import redact


def display_url(url: str) -> str:
    """The URL or HOST:PORT address without user:password@ and without its query (which may carry
    a key); whatever it cannot take apart, redacted like any text."""
    if "://" not in url:
        return redact(url.rsplit("@", 1)[-1])  # user:password@host:port, a Redis address
    try:
        parts = urlsplit(url)
    except ValueError:  # a bracketed host that is not an IPv6 address
        return redact(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return redact(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
