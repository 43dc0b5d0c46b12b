"""Remove what looks like a secret from a log line before it is kept or shown.

Each secret is replaced by `***` and what names it is kept, so the line still reads:

    password=hunter2                  -> password=***
    {"api_key": "abc"}                -> {"api_key": "***"}
    Authorization: Bearer eyJhbGci... -> Authorization: Bearer ***
    https://user:pw@host/             -> https://user:***@host/
    sk-proj-AbC123...                 -> sk-***        (likewise hf_***, AKIA***)
    a 32+ character opaque token      -> ***

Keys are names ending in password, passwd, pwd, secret, token, api_key / apikey / api-key,
access_key, private_key or authorization (so `client_secret`, `aws_secret_access_key`,
`X-Api-Key` count), followed by `:` or `=`, the value quoted or not. Names that merely contain
such a word (`max_tokens`, `tokenizer`) are left alone, and so are the tokenizer's vocabulary
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

MASK = "***"

_SCHEMES = r"(?:bearer|basic|token|digest|negotiate|apikey)"

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
    (?P<sep>["']?[ \t]*[:=][ \t]*)
    (?P<scheme>"""
    + _SCHEMES
    + r"""[ \t]+)?
    (?P<value>
        "(?:[^"\\]|\\.)*(?:"|$)          # double-quoted, possibly cut by the end of the line
      | '[^']*(?:'|$)                    # single-quoted
      | [^\s,;&"'<>{}\[\]()]+            # bare, up to a delimiter
    )
    """,
    re.IGNORECASE | re.VERBOSE,
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
    line = _KEY_VALUE.sub(_key_value, line)
    line = _AUTH_SCHEME_TOKEN.sub(_auth_scheme, line)
    line = _KNOWN_KEYS.sub(_known_key, line)
    return _OPAQUE_RUN.sub(_opaque, line)


def _url_userinfo(match: re.Match[str]) -> str:
    if not match.group("password") or match.group("password") == MASK:
        return match.group(0)
    return f"{match.group('prefix')}{MASK}@"


def _key_value(match: re.Match[str]) -> str:
    key, value = match.group("key"), match.group("value")
    if _NOT_SECRET_KEY.search(key):
        return match.group(0)
    quote = value[0] if value[0] in "\"'" else ""
    inner = value[len(quote) :]
    if quote and inner.endswith(quote):
        inner = inner[:-1]
    if not inner or inner.startswith(MASK):
        return match.group(0)  # empty, or already redacted
    closing = quote if quote and len(value) > 1 and value.endswith(quote) else ""
    return f"{key}{match.group('sep')}{match.group('scheme') or ''}{quote}{MASK}{closing}"


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
