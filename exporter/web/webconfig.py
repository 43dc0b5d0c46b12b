"""The exporter-toolkit web config file (``--web.config.file``): TLS and basic auth.

Same YAML format as node_exporter's ``web-config.yml``, restricted to the keys this
exporter implements. Validation is strict and reports every problem at once, each
prefixed with its YAML path, so one edit-and-retry fixes the whole file.

The certificate, key and client CA files are read again when they change on disk, so a
rotated certificate needs no restart (exporter-toolkit reads them on every handshake; we
read them when their stat changes, and keep the last good ones while a rotation is half
done). The file itself is read again on reload: ``build_web_config`` builds the new web
config completely or raises, and the server swaps it in with ``use_web_config``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import secrets
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import bcrypt
import yaml

from ..logs.redact import safe_repr

log = logging.getLogger(__name__)

CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
# Types that verify a client certificate, and so need a CA to verify it against.
_VERIFYING_AUTH_TYPES = ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
# Python's ssl module has no verify callback, so it cannot *require* a client
# certificate without also verifying it. Rejecting beats silently changing meaning.
_UNSUPPORTED_AUTH_TYPES = {
    "RequireAnyClientCert": (
        "RequireAnyClientCert is not supported (Python's ssl module cannot require a client "
        "certificate without verifying it); use RequireAndVerifyClientCert with client_ca_file"
    ),
}
_VERIFY_MODES = {
    "NoClientCert": ssl.CERT_NONE,
    # Requesting a certificate nobody verifies or looks at grants nothing, so not
    # asking at all is equivalent for access control (and works with stdlib ssl).
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}

TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_INSECURE_TLS_VERSIONS = ("TLS10", "TLS11")

# The only response headers exporter-toolkit lets a web config set, with the
# values it allows (None: free-form).
ALLOWED_HEADERS: Mapping[str, tuple[str, ...] | None] = MappingProxyType(
    {
        "Content-Security-Policy": None,
        "Strict-Transport-Security": None,
        "X-Content-Type-Options": ("nosniff",),
        "X-Frame-Options": ("deny", "sameorigin"),
        "X-XSS-Protection": None,
    }
)

_TOP_KEYS = ("tls_server_config", "basic_auth_users", "http_server_config")
_TLS = "tls_server_config"
_TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version")
_HTTP_KEYS = ("headers",)

_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_BCRYPT_MAX_PASSWORD = 72  # bytes; bcrypt>=5 raises beyond this instead of truncating
_MAX_AUTH_HEADER = 4096  # longer headers are refused before base64-decoding them
MAX_FILE_BYTES = 1024 * 1024  # a web config is a few lines; a bigger file is refused unread


class WebConfigError(Exception):
    """The web config is unusable; ``errors`` lists every problem found."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = list(errors)
        super().__init__(f"bad web config {source}:\n  " + "\n  ".join(self.errors))


@dataclass(frozen=True)
class TLSConfig:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: str = "TLS12"
    # The web config file this came from, only for error messages.
    source: str = field(default="", repr=False, compare=False)

    def ssl_context(self) -> ssl.SSLContext:
        """Build a server-side context; files are (re)read on every call."""
        errors: list[str] = []
        for key, path in (
            ("cert_file", self.cert_file),
            ("key_file", self.key_file),
            ("client_ca_file", self.client_ca_file),
        ):
            if path is not None:
                _check_readable(path, f"{_TLS}.{key}", errors)
        if errors:
            raise WebConfigError(self.source, errors)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = TLS_VERSIONS[self.min_version]
        ctx.options |= ssl.OP_NO_RENEGOTIATION
        self._load_certificate(ctx, errors)
        if self.client_ca_file is not None:
            try:
                ctx.load_verify_locations(cafile=self.client_ca_file)
            except ssl.SSLError:
                errors.append(f"{_TLS}.client_ca_file: no PEM certificate in {self.client_ca_file}")
        ctx.verify_mode = _VERIFY_MODES[self.client_auth_type]
        if errors:
            raise WebConfigError(self.source, errors)
        return ctx

    def _load_certificate(self, ctx: ssl.SSLContext, errors: list[str]) -> None:
        # load_cert_chain cannot say whether the cert or the key is bad, so parse
        # the certificate on its own first to blame the right file.
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=self.cert_file)
        except ssl.SSLError:
            errors.append(f"{_TLS}.cert_file: no PEM certificate in {self.cert_file}")
            return
        try:
            # Without a password callback OpenSSL would prompt on the terminal
            # for an encrypted key and hang the server.
            ctx.load_cert_chain(self.cert_file, self.key_file, password=_refuse_password)
        except _EncryptedKeyError:
            errors.append(f"{_TLS}.key_file: encrypted private keys are not supported: {self.key_file}")
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                errors.append(f"{_TLS}.key_file: private key does not match the certificate in cert_file")
            else:
                errors.append(f"{_TLS}.key_file: no usable PEM private key in {self.key_file}")


class _EncryptedKeyError(Exception):
    pass


def _refuse_password() -> bytes:
    raise _EncryptedKeyError


def _check_readable(path: str, where: str, errors: list[str]) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        errors.append(f"{where}: file not found: {path}")
    except OSError as exc:
        errors.append(f"{where}: cannot read {path}: {exc.strerror}")


# What identifies a file's content without reading it: a rotation changes one of these.
_FileStamp = tuple[int, int, int, int] | None


def _stamp(path: str | None) -> _FileStamp:
    if path is None:
        return None
    try:
        info = os.stat(path)  # follows symlinks: a Kubernetes secret swaps its ..data link
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class RotatingTLSContext:
    """The server's TLS context, built again when the certificate, key or client CA changes on disk.

    Checked at every new connection (three stat calls). New files that do not load, as when the
    certificate is replaced and its key not yet, keep the last good context, with one warning per
    change, until the files load again.
    """

    def __init__(self, tls: TLSConfig) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._loaded: tuple[_FileStamp, ...] | None = None
        self._refused: tuple[_FileStamp, ...] | None = None

    def _stamps(self) -> tuple[_FileStamp, ...]:
        return tuple(
            _stamp(path) for path in (self._tls.cert_file, self._tls.key_file, self._tls.client_ca_file)
        )

    def current(self) -> ssl.SSLContext:
        """The context for a new connection. Raises WebConfigError only if the files never loaded."""
        stamps = self._stamps()
        context = self._context
        if context is not None and stamps in (self._loaded, self._refused):
            return context
        with self._lock:
            if self._context is None or stamps not in (self._loaded, self._refused):
                self._load(stamps)
            assert self._context is not None  # _load raised otherwise
            return self._context

    def _load(self, stamps: tuple[_FileStamp, ...]) -> None:
        try:
            context = self._tls.ssl_context()
        except WebConfigError as exc:
            if self._context is None:
                raise
            self._refused = stamps
            log.warning(
                "TLS files changed but do not load; serving the previous certificate",
                extra={"error": "; ".join(exc.errors)},
            )
            return
        if self._context is not None:
            log.info("TLS certificate reloaded", extra={"cert_file": self._tls.cert_file})
        self._context, self._loaded, self._refused = context, stamps, None


@dataclass(frozen=True)
class WebConfig:
    tls: TLSConfig | None = None
    basic_auth_users: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Built once so its verdict cache is shared by every request.
    _authenticator: BasicAuthenticator | None = field(init=False, repr=False, compare=False)
    # Loads the TLS files on first use and again when they change.
    _tls_context: RotatingTLSContext | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen, so freeze the mappings too (and detach them from the caller's dicts).
        users = MappingProxyType(dict(self.basic_auth_users))
        object.__setattr__(self, "basic_auth_users", users)
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        object.__setattr__(self, "_authenticator", BasicAuthenticator(users) if users else None)
        object.__setattr__(self, "_tls_context", RotatingTLSContext(self.tls) if self.tls else None)

    def __repr__(self) -> str:
        # Password hashes are secrets (offline-crackable): show user names only.
        users = {user: "<redacted>" for user in self.basic_auth_users}
        return f"WebConfig(tls={self.tls!r}, basic_auth_users={users!r}, headers={dict(self.headers)!r})"

    __str__ = __repr__

    def ssl_context(self) -> ssl.SSLContext | None:
        """A new context from the files as they are now (None: plain HTTP)."""
        return self.tls.ssl_context() if self.tls is not None else None

    def tls_context(self) -> ssl.SSLContext | None:
        """The context for a new connection, the files read again when they changed (None: plain HTTP)."""
        return self._tls_context.current() if self._tls_context is not None else None

    def authenticator(self) -> BasicAuthenticator | None:
        """The shared authenticator, or None when no users are configured."""
        return self._authenticator


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {safe_repr(key)}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def build_web_config(path: str | None) -> WebConfig | None:
    """The web config of `path` built completely: parsed, validated and its TLS files loaded.

    Raises WebConfigError listing every problem, before anything runs with it: the daemon's start
    and reload call this, then swap the result in with ExporterHTTPServer.use_web_config, which
    cannot fail. None when there is no web config file (plain HTTP, no auth).
    """
    if path is None:
        return None
    config = load_web_config(path)
    config.tls_context()  # a certificate that does not load fails here, not at the first handshake
    return config


def load_web_config(path: str) -> WebConfig:
    """Read and strictly validate a web config file; raise WebConfigError listing all problems."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise WebConfigError(path, ["file not found"]) from None
    except OSError as exc:
        raise WebConfigError(path, [f"cannot read file: {exc.strerror}"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise WebConfigError(path, [f"file is larger than {MAX_FILE_BYTES} bytes"])

    try:
        doc = yaml.load(raw, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except RecursionError:
        raise WebConfigError(path, ["YAML nested too deeply"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise WebConfigError(path, [f"YAML syntax error at {where}: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise WebConfigError(path, [f"YAML syntax error: {exc}"]) from None

    # Relative paths are relative to the config file, as in exporter-toolkit.
    base_dir = os.path.dirname(os.path.abspath(path))
    errors: list[str] = []
    config = _parse(doc, base_dir, path, errors)
    if errors:
        raise WebConfigError(path, errors)
    return config


def _parse(doc: Any, base_dir: str, source: str, errors: list[str]) -> WebConfig:
    if doc is None:  # empty file: plain HTTP, no auth
        return WebConfig()
    if not isinstance(doc, dict):
        errors.append(f"(top level): must be a mapping, got {_kind(doc)}")
        return WebConfig()
    _reject_unknown(doc, _TOP_KEYS, "", errors)

    tls = None
    if doc.get("tls_server_config") is not None:
        tls = _parse_tls(doc["tls_server_config"], base_dir, source, errors)
    users = _parse_users(doc.get("basic_auth_users"), errors)
    headers = _parse_http(doc.get("http_server_config"), errors)
    return WebConfig(tls=tls, basic_auth_users=users, headers=headers)


def _parse_tls(section: Any, base_dir: str, source: str, errors: list[str]) -> TLSConfig | None:
    if not isinstance(section, dict):
        errors.append(f"{_TLS}: must be a mapping, got {_kind(section)}")
        return None
    _reject_unknown(section, _TLS_KEYS, _TLS, errors)
    errors_before = len(errors)
    cert_file = _tls_file(section, "cert_file", base_dir, errors, required=True)
    key_file = _tls_file(section, "key_file", base_dir, errors, required=True)
    client_ca_file = _tls_file(section, "client_ca_file", base_dir, errors, required=False)
    client_auth_type = _client_auth_type(section, errors)
    min_version = _min_version(section, errors)
    if len(errors) > errors_before or cert_file is None or key_file is None:
        return None
    return TLSConfig(
        cert_file=cert_file,
        key_file=key_file,
        client_auth_type=client_auth_type,
        client_ca_file=client_ca_file,
        min_version=min_version,
        source=source,
    )


def _tls_file(
    section: dict[Any, Any], key: str, base_dir: str, errors: list[str], required: bool
) -> str | None:
    """The file named by `key`, resolved against the config's directory and checked to exist."""
    value = section.get(key)
    if value is None or value == "":
        if required:
            errors.append(f"{_TLS}.{key}: required when tls_server_config is set")
        return None
    if not isinstance(value, str):
        errors.append(f"{_TLS}.{key}: must be a string, got {_kind(value)}")
        return None
    resolved = os.path.join(base_dir, value)  # join() keeps absolute paths as they are
    if not os.path.exists(resolved):
        errors.append(f"{_TLS}.{key}: file not found: {resolved}")
    elif not os.path.isfile(resolved):
        errors.append(f"{_TLS}.{key}: not a regular file: {resolved}")
    return resolved


def _client_auth_type(section: dict[Any, Any], errors: list[str]) -> str:
    """client_auth_type, checked against client_ca_file: a type that verifies needs a CA, and a CA
    needs a type that uses it (exporter-toolkit's rule: an unused CA is a config mistake)."""
    auth_type = section.get("client_auth_type", "NoClientCert")
    ca_given = section.get("client_ca_file") not in (None, "")
    where = f"{_TLS}.client_auth_type"
    if not isinstance(auth_type, str) or auth_type not in CLIENT_AUTH_TYPES:
        errors.append(f"{where}: must be one of {', '.join(CLIENT_AUTH_TYPES)}, got {safe_repr(auth_type)}")
    elif auth_type in _UNSUPPORTED_AUTH_TYPES:
        errors.append(f"{where}: {_UNSUPPORTED_AUTH_TYPES[auth_type]}")
    elif auth_type in _VERIFYING_AUTH_TYPES and not ca_given:
        errors.append(f"{_TLS}.client_ca_file: required when client_auth_type is {auth_type}")
    elif auth_type == "NoClientCert" and ca_given:
        errors.append(f"{_TLS}.client_ca_file: set, but client_auth_type is NoClientCert")
    return str(auth_type)


def _min_version(section: dict[Any, Any], errors: list[str]) -> str:
    version = section.get("min_version", "TLS12")
    where = f"{_TLS}.min_version"
    if not isinstance(version, str) or version not in TLS_VERSIONS | dict.fromkeys(_INSECURE_TLS_VERSIONS):
        errors.append(f"{where}: must be one of {', '.join(TLS_VERSIONS)}, got {safe_repr(version)}")
    elif version in _INSECURE_TLS_VERSIONS:
        errors.append(f"{where}: {version} is insecure and not supported; use TLS12 or TLS13")
    return str(version)


def _parse_users(section: Any, errors: list[str]) -> dict[str, str]:
    where = "basic_auth_users"
    if section is None:
        return {}
    if not isinstance(section, dict):
        errors.append(f"{where}: must be a mapping of user name to bcrypt hash, got {_kind(section)}")
        return {}
    users: dict[str, str] = {}
    for user, hashed in section.items():
        if not isinstance(user, str):
            errors.append(f"{where}.{_key_name(user)}: user name must be a string, got {_kind(user)}")
            continue
        if ":" in user or "\0" in user:
            # Basic auth splits user:password at the first colon, so such a user
            # could never log in; NUL would make verdict-cache keys ambiguous.
            errors.append(f"{where}.{_key_name(user)}: user name must not contain ':' or NUL")
            continue
        # Never echo the value: it is a password hash.
        if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            errors.append(f"{where}.{_key_name(user)}: must be a bcrypt hash string")
            continue
        users[user] = hashed
    return users


def _parse_http(section: Any, errors: list[str]) -> dict[str, str]:
    where = "http_server_config"
    if section is None:
        return {}
    if not isinstance(section, dict):
        errors.append(f"{where}: must be a mapping, got {_kind(section)}")
        return {}
    _reject_unknown(section, _HTTP_KEYS, where, errors)
    raw = section.get("headers")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errors.append(f"{where}.headers: must be a mapping of header name to value, got {_kind(raw)}")
        return {}
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if _header_allowed(name, value, f"{where}.headers.{_key_name(name)}", errors) and value:
            headers[name] = value  # blank means unset, as in exporter-toolkit's docs
    return headers


def _header_allowed(name: Any, value: Any, path: str, errors: list[str]) -> bool:
    """Whether a web config may set this response header to this value (else an error says why)."""
    if name not in ALLOWED_HEADERS:
        errors.append(f"{path}: header can not be configured; allowed: {', '.join(ALLOWED_HEADERS)}")
        return False
    if not isinstance(value, str):
        errors.append(f"{path}: must be a string, got {_kind(value)}")
        return False
    allowed = ALLOWED_HEADERS[name]
    if allowed is not None and value not in allowed:
        errors.append(f"{path}: must be one of {', '.join(allowed)}, got {safe_repr(value)}")
        return False
    if any(ch in value for ch in "\r\n\0"):
        errors.append(f"{path}: must not contain CR, LF or NUL")  # header injection
        return False
    return True


def _reject_unknown(section: dict[Any, Any], known: tuple[str, ...], where: str, errors: list[str]) -> None:
    for key in section:
        if key not in known:
            name = _key_name(key)
            errors.append(f"{where}.{name}: unknown key" if where else f"{name}: unknown key")


def _key_name(key: Any) -> str:
    """A mapping key as a path segment of an error message: short, whatever the file holds."""
    text = key if isinstance(key, str) else safe_repr(key)
    return text if len(text) <= 60 else text[:59] + "…"


def _kind(value: Any) -> str:
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer"}
    if value is None:
        return "null"
    return kinds.get(type(value), type(value).__name__)


class BasicAuthenticator:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    bcrypt costs tens of milliseconds by design and Prometheus sends the same credentials every
    scrape, so credentials that passed are remembered under a salted SHA-256 (plaintext passwords
    are never stored). Only successes are remembered: a flood of wrong passwords can neither evict
    the good credentials nor fill the memory, and a correct scrape never waits for bcrypt again.

    Wrong passwords cost bcrypt work, so that work is bounded: one check at a time (a flood costs
    one core, as in exporter-toolkit), and each client may fail FAILURE_BURST checks at once and then
    one every FAILURE_REFILL_SECONDS; beyond that its unknown credentials are refused without a
    check (`throttled`) until it has waited, and the server refuses its new connections as it
    accepts them (a flooding host costs no thread). Credentials that passed before are granted at
    once on a connection that is open.
    """

    CACHE_SIZE = 64  # credentials that passed: a handful of scrapers and people
    FAILURE_BURST = 10
    FAILURE_REFILL_SECONDS = 1.0
    MAX_CLIENTS = 4096  # clients whose failure budget is remembered, least recently failed forgotten

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)
        for user, hashed in self._users.items():
            if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
                raise ValueError(f"user {user!r}: not a bcrypt hash")
        # Unknown users are checked against a real hash of the highest cost in use,
        # so they take as long as known ones (no user enumeration by timing).
        self._dummy_hash = max(self._users.values(), key=lambda h: int(h[4:6]), default=None)
        self._salt = secrets.token_bytes(32)
        self._granted: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()  # guards _granted and _budgets
        # client -> (failed checks it may still spend, when that was computed)
        self._budgets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        # One bcrypt at a time, as exporter-toolkit does: a flood of bad passwords
        # then costs one core, not all of them.
        self._bcrypt_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BasicAuthenticator(users={sorted(self._users)!r})"

    def check(self, authorization_header: str | None, client: str | None = None) -> bool:
        """True only for a well-formed Basic header with a valid user and password."""
        return self.verdict(authorization_header, client) == "granted"

    def verdict(self, authorization_header: str | None, client: str | None = None) -> str:
        """ "granted", "denied", or "throttled" (refused unchecked: `client`, when given, failed
        too often lately)."""
        credentials = _parse_basic(authorization_header)
        if credentials is None:
            return "denied"
        user, password = credentials
        if len(password) > _BCRYPT_MAX_PASSWORD or "\0" in user or self._dummy_hash is None:
            return "denied"
        key = hashlib.sha256(self._salt + user.encode() + b"\0" + password).digest()
        if self._was_granted(key):
            return "granted"
        if client is not None and not self._spend(client):
            return "throttled"
        with self._bcrypt_lock:
            # Another thread may have checked the same credentials while we waited.
            ok = self._was_granted(key) or self._verify(user, password)
        if ok:
            self._grant(key)
            if client is not None:
                self._refund(client)
        return "granted" if ok else "denied"

    def _verify(self, user: str, password: bytes) -> bool:
        hashed = self._users.get(user)
        try:
            ok = bcrypt.checkpw(password, (hashed or self._dummy_hash or "").encode())
        except ValueError:  # malformed hash; validation should have prevented it
            return False
        return ok and hashed is not None

    def _was_granted(self, key: bytes) -> bool:
        with self._lock:
            if key not in self._granted:
                return False
            self._granted.move_to_end(key)
            return True

    def _grant(self, key: bytes) -> None:
        with self._lock:
            self._granted[key] = None
            self._granted.move_to_end(key)
            while len(self._granted) > self.CACHE_SIZE:
                self._granted.popitem(last=False)

    def _spend(self, client: str) -> bool:
        """Take one check from the client's budget (given back if it passes); False when none is left."""
        now = time.monotonic()
        with self._lock:
            left, at = self._budgets.get(client, (float(self.FAILURE_BURST), now))
            left = min(float(self.FAILURE_BURST), left + (now - at) / self.FAILURE_REFILL_SECONDS)
            if left < 1:
                self._budgets[client] = (left, now)
                return False
            self._budgets[client] = (left - 1, now)
            self._budgets.move_to_end(client)
            while len(self._budgets) > self.MAX_CLIENTS:
                self._budgets.popitem(last=False)
            return True

    def throttled(self, client: str) -> bool:
        """Whether `client` has no failed check left now (its next unknown credentials would be
        refused unchecked): the server then refuses its connections as they are accepted."""
        with self._lock:
            if client not in self._budgets:
                return False
            left, at = self._budgets[client]
        return left + (time.monotonic() - at) / self.FAILURE_REFILL_SECONDS < 1

    def _refund(self, client: str) -> None:
        with self._lock:
            left, at = self._budgets.get(client, (float(self.FAILURE_BURST), time.monotonic()))
            self._budgets[client] = (min(float(self.FAILURE_BURST), left + 1), at)


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """Split ``Basic base64(user:password)`` into (user, password bytes); None if malformed."""
    if not isinstance(header, str) or len(header) > _MAX_AUTH_HEADER:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII input
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password.encode("utf-8")
