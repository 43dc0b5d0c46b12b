"""Remove what looks like a secret from any text before it is kept or shown.

The one redactor for every text that reaches a page, a log line, JSON or a file. Each secret is
replaced by `***` and what names it is kept, so the text still reads:

    password=hunter2                  -> password=***
    PGPASSWORD=hunter2                -> PGPASSWORD=***
    --api-key abc123 / --token=abc    -> --api-key *** / --token=***
    {"api_key": "abc"}                -> {"api_key": "***"}
    Authorization: Bearer eyJhbGci... -> Authorization: Bearer ***
    https://user:pw@host/             -> https://user:***@host/
    user:pw@host:6379, :pw@[::1]:6379 -> user:***@host:6379, :***@[::1]:6379
    redis-cli -a pw / curl -u bob:pw  -> redis-cli -a *** / curl -u bob:***
    sk-proj-AbC123...                 -> sk-***        (likewise hf_***, AKIA***)
    a 32+ character opaque token      -> ***

Keys are names ending in password, passwd, pwd, secret, token, api_key / apikey / api-key,
access_key, private_key or authorization (so `client_secret`, `aws_secret_access_key`,
`X-Api-Key` count), followed by `:` or `=`, the value quoted or not. Environment-style names
(upper case) count when they contain PASSWORD, PASSWD, TOKEN, SECRET or KEY as a word of their own
on the right (`PGPASSWORD`, `AWS_SECRET_ACCESS_KEY`, `DB_PASSWORD_FILE`; not `TOKENIZERS_PARALLELISM`
or `MAX_TOKENS`). Command-line flags count when their last word is such a word (`--password`,
`--hf-token`, `--api-key`, `--client-secret`), the value after `=` or a space. A few commands take a password
by a short flag: `redis-cli -a`, `sshpass -p`, `mysql -pPASSWORD`, `curl -u user:password`. Names that
merely contain such a word (`max_tokens`, `tokenizer`) are left alone, and so are the tokenizer's vocabulary
entries (`eos_token='</s>'`, `pad_token_id=0`): in an LLM service's log they are not secrets.
An opaque token is a run of 32 or more [A-Za-z0-9+/_-] characters (plus `=` padding) with letters
and digits in one stretch of 16 or more between `/`, `_` and `-`: file paths with digits
(`/models/glm-4-9b/checkpoint-1000`) and UUIDs are not opaque, hex digests are (a 40 character
hex API key cannot be told from a commit hash).

Redaction is applied to the whole line before it is shortened, so a cut can never reveal half a
secret, and it is idempotent: redact(redact(x)) == redact(x).
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

MASK = "***"

_SCHEMES = r"(?:bearer|basic|token|digest|negotiate|apikey)"

# A value after its name: quoted (possibly cut by the end of the line) or bare up to a delimiter.
_QUOTED = r"""
        "(?:[^"\\]|\\.)*(?:"|$)
      | '[^']*(?:'|$)
"""
_VALUE = r"(?P<value>" + _QUOTED + r"""| [^\s,;&"'<>{}\[\]()]+ )"""
# Environment values and flag arguments run to the next blank: API_KEYS=a,b hides both keys.
_WORD_VALUE = r"(?P<value>" + _QUOTED + r"""| (?!--)[^\s"']+ )"""
_SEPARATOR = r"""(?P<sep>["']?[ \t]*[:=][ \t]*)"""

# key (name ending in a secret word) + separator + optional auth scheme + value
_KEY_VALUE = re.compile(
    r"""
    (?<![A-Za-z0-9])
    (?P<key>
        (?:[A-Za-z0-9]+[_.-]){0,6}?
        (?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|authorization)
        (?:[_-]?key)?
    )
    (?![A-Za-z0-9])
    """
    + _SEPARATOR
    + r"""
    (?P<scheme>"""
    + _SCHEMES
    + r"""[ \t]+)?
    """
    + _VALUE,
    re.IGNORECASE | re.VERBOSE,
)

# An environment-style assignment (PGPASSWORD=..., "AWS_SECRET_ACCESS_KEY": ...): an upper-case name
# with a secret word ending at `_` or the name's end. The lookahead finds the word inside the name,
# so a name without one is not matched at all (and cannot swallow the assignment after it).
_ENV_ASSIGNMENT = re.compile(
    r"""
    (?<![A-Za-z0-9_])
    (?P<key>(?=[A-Z0-9_]*?(?:PASSWORDS?|PASSWD|TOKEN|SECRETS?|KEYS?)(?![A-Z0-9]))[A-Z][A-Z0-9_]*+)
    (?![a-z])
    """
    + _SEPARATOR
    + _WORD_VALUE,
    re.VERBOSE,
)

# A command-line flag and its value: --name=value or --name value.
_FLAG = re.compile(
    r"""
    (?<![A-Za-z0-9_-])--(?P<key>[A-Za-z0-9][A-Za-z0-9_.-]*+)
    (?P<sep>=|[ \t]+)
    """
    + _WORD_VALUE,
    re.VERBOSE,
)
_FLAG_SECRET_WORDS = frozenset(
    (
        "password",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "requirepass",
        "masterauth",
        "auth",
        "secret",
        "token",
        "key",
        "apikey",
        "credentials",
    )
)

# Tokenizer vocabulary and counters named "..._token": not secrets.
_NOT_SECRET_KEY = re.compile(
    r"(?:^|[_.-])(?:bos|eos|pad|unk|sep|cls|mask|start|end|stop|special|image|img|audio|video|vision"
    r"|max|min|num|total|prompt|completion|output|input|first|last|next|new|per|tool|think|default"
    r"|decoder_start|im_start|im_end)[_.-]?token(?:[_-]?(?:id|ids))?$"
    r"|(?:^|[_.-])token[_-]?(?:id|ids)$",
    re.IGNORECASE,
)

_AUTH_SCHEME_TOKEN = re.compile(r"\b(?P<scheme>Bearer|Basic)(?P<space>[ \t]+)(?P<token>[A-Za-z0-9._~+/-]+=*)")

_URL_USERINFO = re.compile(r"(?P<prefix>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)(?P<password>[^/?#\s]*)@")
# user:password@host without a scheme (a Redis address, a DSN fragment): a user (maybe empty), a
# password up to the last @ before a host name or a bracketed IPv6 address.
_BARE_USERINFO = re.compile(
    r"(?P<prefix>(?<![^\s\"'<>()\[\]{},;=|`])[^\s:/@\"'<>()\[\]{},;=|`]*:)"
    r"(?P<password>[^\s/?#<>\"]+)@(?=\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9])"
)
# Commands that take a password by a short flag, and that flag (up to the end of the command).
_COMMAND = re.compile(
    r"(?<![\w.-])(?P<command>redis-cli|redis-benchmark|sshpass|curl|mysql|mysqladmin|mysqldump)(?![\w.-])"
    r"(?P<args>[^|;&\n]*)"
)
_SHORT_FLAG = {
    "redis-cli": re.compile(r"(?<!\S)(?P<head>-a(?:[ \t]+|=))(?P<value>[^\s\"']+|\"[^\"]*\"|'[^']*')"),
    "sshpass": re.compile(r"(?<!\S)(?P<head>-p[ \t]*)(?P<value>[^\s\"']+|\"[^\"]*\"|'[^']*')"),
    "mysql": re.compile(r"(?<!\S)(?P<head>-p)(?P<value>[^\s\"']+|\"[^\"]*\"|'[^']*')"),
    # curl -u user:password: the user stays, the password goes
    "curl": re.compile(
        r"(?<!\S)(?P<head>(?:-u|-U|--user|--proxy-user)(?:[ \t]+|=)?[\"']?[^\s:\"']*:)(?P<value>[^\s\"']+)"
    ),
}
_SHORT_FLAG["redis-benchmark"] = _SHORT_FLAG["redis-cli"]
_SHORT_FLAG["mysqladmin"] = _SHORT_FLAG["mysqldump"] = _SHORT_FLAG["mysql"]

_KNOWN_KEYS = re.compile(
    r"""
      (?<![A-Za-z0-9_-])(?P<openai>sk-)(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}
    | (?<![A-Za-z0-9_-])(?P<hf>hf_)(?=[A-Za-z0-9]*[A-Z])[A-Za-z0-9]{30,}
    | (?<![A-Za-z0-9])(?P<aws>AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])
    """,
    re.VERBOSE,
)

_OPAQUE_RUN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32,}=*(?![A-Za-z0-9+/_-])")
_PIECE = re.compile(r"[A-Za-z0-9+=]{16,}")


def redact(line: str) -> str:
    """The line with every value that looks like a secret replaced by ***."""
    if not line:
        return line
    line = _URL_USERINFO.sub(_url_userinfo, line)
    line = _BARE_USERINFO.sub(_url_userinfo, line)
    line = _COMMAND.sub(_command, line)
    line = _ENV_ASSIGNMENT.sub(_env_assignment, line)
    line = _FLAG.sub(_flag, line)
    line = _KEY_VALUE.sub(_key_value, line)
    line = _AUTH_SCHEME_TOKEN.sub(_auth_scheme, line)
    line = _KNOWN_KEYS.sub(_known_key, line)
    return _OPAQUE_RUN.sub(_opaque, line)


def _url_userinfo(match: re.Match[str]) -> str:
    if not match.group("password") or match.group("password") == MASK:
        return match.group(0)
    return f"{match.group('prefix')}{MASK}@"


def _command(match: re.Match[str]) -> str:
    flag = _SHORT_FLAG[match.group("command")]
    return match.group("command") + flag.sub(_short_flag, match.group("args"))


def _short_flag(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[0] in "\"'" else ""
    if value.strip("\"'") == MASK:
        return match.group(0)  # already redacted
    return f"{match.group('head')}{quote}{MASK}{quote}"


def _key_value(match: re.Match[str]) -> str:
    if _NOT_SECRET_KEY.search(match.group("key")):
        return match.group(0)
    return _masked(match)


def _env_assignment(match: re.Match[str]) -> str:
    return match.group(0) if _NOT_SECRET_KEY.search(match.group("key")) else _masked(match)


def _flag(match: re.Match[str]) -> str:
    key = match.group("key")
    last_word = re.split(r"[_.-]", key)[-1].lower()
    if last_word not in _FLAG_SECRET_WORDS or _NOT_SECRET_KEY.search(key):
        return match.group(0)
    return _masked(match)


def _masked(match: re.Match[str]) -> str:
    """The match with its value replaced by ***: the name, separator and quotes kept."""
    value = match.group("value")
    quote = value[0] if value[0] in "\"'" else ""
    inner = value[len(quote) :]
    if quote and inner.endswith(quote):
        inner = inner[:-1]
    if not inner or inner.startswith(MASK):
        return match.group(0)  # empty, or already redacted
    closing = quote if quote and len(value) > 1 and value.endswith(quote) else ""
    head = match.group(0)[: match.start("value") - match.start()]
    return f"{head}{quote}{MASK}{closing}"


def _auth_scheme(match: re.Match[str]) -> str:
    token = match.group("token")
    core = token.rstrip(".")  # a full stop ending the sentence is not part of the credential
    if not _looks_opaque(core, minimum=8):
        return match.group(0)  # "Bearer token", "Basic auth": prose, not a credential
    return f"{match.group('scheme')}{match.group('space')}{MASK}{token[len(core) :]}"


def _known_key(match: re.Match[str]) -> str:
    prefix = match.group("openai") or match.group("hf") or match.group("aws")
    return f"{prefix}{MASK}"


def _opaque(match: re.Match[str]) -> str:
    run = match.group(0)
    for piece in _PIECE.findall(run.replace("/", " ").replace("_", " ").replace("-", " ")):
        if _has_letters_and_digits(piece):
            return MASK
    return run


def _looks_opaque(token: str, minimum: int) -> bool:
    """Long enough and not a plain word: digits or symbols, or upper case after the first letter."""
    if len(token) < minimum:
        return False
    if any(c.isdigit() or c in "._~+/=-" for c in token):
        return True
    rest = token[1:]
    return any(c.isupper() for c in rest) and any(c.islower() for c in rest)


def _has_letters_and_digits(text: str) -> bool:
    return any(c.isdigit() for c in text) and any(c.isalpha() for c in text)


def redact_data(value: Any) -> Any:
    """JSON-like data (dicts, lists, strings, numbers) with every string redacted, keys included:
    what a JSON document (/api/diagnosis, doctor --json, a capture file) shows."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(key): redact_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(item) for item in value]
    return value


def redact_variable(name: str, value: str) -> str:
    """An environment variable's value as it may be shown: *** when its name names a secret
    (in any case: `pgpassword` too), else the value redacted like any text."""
    assignment = f"{name.upper()}="
    shown = redact(assignment + value)
    return shown.removeprefix(assignment) if shown.startswith(assignment) else MASK


# --- values in error messages -------------------------------------------------------------------

MAX_SHOWN = 60  # characters of a value an error message shows
_MAX_REDACTED = 65536  # a longer string is cut to this before it is redacted (bounds the work)


def safe_repr(value: object, limit: int = MAX_SHOWN) -> str:
    """`repr(value)` for an error message: secrets redacted, long values cut, bounded work.

    Never echoes a secret (credentials in URLs become ***), and never builds a huge text: a 10 MB
    string, a number with a million digits or a YAML alias bomb cost no more than a short value.
    """
    if isinstance(value, str):
        shown = repr(_cut(redact(value[:_MAX_REDACTED]), limit))
        return shown if len(value) <= limit else f"{shown} ({len(value)} characters)"
    return _cut(redact(_BOUNDED_REPR.repr(value)), limit)


class _BoundedRepr(reprlib.Repr):
    """reprlib's bounded repr, with every string redacted whole before it is cut."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 6
        self.maxstring = self.maxother = MAX_SHOWN

    def repr_str(self, x: str, level: int) -> str:
        return repr(_cut(redact(x[:_MAX_REDACTED]), self.maxstring))

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # str() of a huge int is slow, and refused past 4300 digits
            return f"<an integer of about {int(x.bit_length() * 0.30103)} digits>"
        return repr(x)

    def repr_instance(self, x: object, level: int) -> str:
        return _cut(redact(super().repr_instance(x, level)), self.maxother)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


_BOUNDED_REPR = _BoundedRepr()
