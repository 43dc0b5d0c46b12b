"""Reading a secret named in the config (an environment variable or a file) at the moment of use.

Values are never logged, never put in metrics, and never kept in the config object: a rotated
password file is picked up on the next collection without a reload.
"""

from __future__ import annotations

import base64
import os

from .model import ProbeTarget, Secret


class SecretError(Exception):
    """The secret could not be read; the message names where it was looked for, never a value."""


def read_secret(secret: Secret) -> str | None:
    """The secret's value, None when none is configured."""
    if secret.env:
        value = os.environ.get(secret.env)
        if value is None:
            raise SecretError(f"environment variable {secret.env} is not set")
        return value
    if secret.file:
        try:
            with open(secret.file, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise SecretError(f"cannot read secret file {secret.file}: {exc.strerror}") from None
    return None


def authorization(target: ProbeTarget) -> str | None:
    """The Authorization header a probe target sends (bearer token or basic auth), None for none."""
    token = read_secret(target.bearer_token)
    if token:
        return f"Bearer {token}"
    password = read_secret(target.password)
    if password is None:
        return None
    pair = f"{target.username or ''}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")
