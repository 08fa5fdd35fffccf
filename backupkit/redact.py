"""Redaction of secrets in URLs and free text, for logs, error messages, ledger
records and evidence.

Pure functions, no I/O. ``redact_url`` keeps what tells the operator which
endpoint it was (scheme, host, port, path) and replaces what authenticates
(userinfo, token-like query parameters, token path segments) with ``***``.
``redact_text`` does the same to every URL found in free text, and to
``password=...`` style key=value pairs (libpq keyword DSNs, environment lines).
Both are idempotent: redacting redacted text changes nothing.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

MASK = "***"

# Query/fragment parameter names whose value is a secret: exact names ...
_SECRET_NAMES = frozenset({
    "key", "sign", "sig", "auth", "authorization", "pass", "pw", "pwd", "passwd", "password", "apikey", "secret",
    "token", "code", "sas", "ticket", "session", "sessionid", "sid", "jwt", "bearer",
})
# ... and name fragments (access_token, client_secret, X-Amz-Signature, api-key, private_key, sslpassword, ...).
_SECRET_PART = re.compile(r"token|secret|passw|pwd|signature|credential|api[-_.]?key|access[-_.]?key|private[-_.]?key"
                          r"|auth[-_.]?key|session[-_.]?id", re.I)

_URL_SHAPE = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*:)?(?P<slashes>//)?(?P<rest>[^?#]*)(?:\?(?P<query>[^#]*))?(?:#(?P<frag>.*))?$",
    re.S)
_PARAM = re.compile(r"(^|[&;])([^&;=]*)=([^&;]*)")
_TOKEN_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]{20,}$")
_TELEGRAM_BOT = re.compile(r"^bot\d+:[A-Za-z0-9_\-]+$")
# hosts whose webhook URL carries its secret as the last path segment, with the path prefixes concerned
_TOKEN_IN_PATH = (
    (re.compile(r"(^|\.)slack\.com$", re.I), ("/services/", "/workflows/", "/triggers/")),
    (re.compile(r"(^|\.)(discord|discordapp)\.com$", re.I), ("/api/webhooks/",)),
    (re.compile(r"(^|\.)(feishu\.cn|larksuite\.com)$", re.I), ("/open-apis/bot/",)),
    (re.compile(r"(^|\.)(office\.com|office365\.com|webhook\.office\.com)$", re.I), ("/webhook", "/webhookb2/")),
)


def _secret_name(name: str) -> bool:
    n = unquote_plus(name).strip().lower()
    return n in _SECRET_NAMES or bool(_SECRET_PART.search(n))


def _redact_params(q: str) -> str:
    def repl(m: re.Match) -> str:
        sep, name, value = m.groups()
        return f"{sep}{name}={MASK}" if value and _secret_name(name) else m.group(0)

    return _PARAM.sub(repl, q)


def _split_authority(rest: str) -> tuple[str, str]:
    """Split what follows ``//`` into (authority, path), treating an unencoded '/' in a password as part of it."""
    i = rest.find("/")
    if i < 0:
        return rest, ""
    auth, path = rest[:i], rest[i:]
    if "@" not in auth and "@" in path:
        host_part = auth.rsplit("]", 1)[-1]
        if ":" in host_part and not host_part.rsplit(":", 1)[1].isdigit():  # 'user:pa' + '/ss@host/db'
            userinfo_tail, after = path.split("@", 1)
            host, slash, tail = after.partition("/")
            return auth + userinfo_tail + "@" + host, slash + tail
    return auth, path


def _looks_random(seg: str) -> bool:
    """>= 20 chars of [A-Za-z0-9_-] with a digit or an upper-case letter: a token, not a word like 'send-notification-hook'."""
    return bool(_TOKEN_SEGMENT.match(seg)) and (any(c.isdigit() for c in seg) or any(c.isupper() for c in seg))


def _redact_path(host: str, path: str) -> str:
    segs = path.split("/")
    last = max((k for k, s in enumerate(segs) if s), default=None)
    hostname = host.rsplit("@", 1)[-1]
    hostname = hostname[1:].split("]", 1)[0] if hostname.startswith("[") else hostname.split(":", 1)[0]
    for host_re, prefixes in _TOKEN_IN_PATH:
        if last is not None and host_re.search(hostname) and path.lower().startswith(prefixes) and segs[last] != MASK:
            segs[last] = MASK
    for k, s in enumerate(segs):
        if _looks_random(s):
            segs[k] = MASK
        elif _TELEGRAM_BOT.match(s):  # api.telegram.org/bot<id>:<token>/sendMessage
            segs[k] = "bot" + MASK
    return "/".join(segs)


def redact_url(url: str) -> str:
    """``url`` with its userinfo, token-like query/fragment values and token path segments replaced by ``***``.

    Scheme, host, port and the rest of the path are kept. A URL without secrets comes back unchanged.
    """
    m = _URL_SHAPE.match(url)
    if m is None:  # not reachable with this pattern, but never return a secret by accident
        return MASK
    scheme, slashes, rest, query, frag = m.group("scheme", "slashes", "rest", "query", "frag")
    out = (scheme or "") + (slashes or "")
    if slashes:
        auth, path = _split_authority(rest)
        if "@" in auth:
            auth = MASK + "@" + auth.rsplit("@", 1)[1]
        out += auth + _redact_path(auth, path)
    else:
        out += rest
    if query is not None:
        out += "?" + _redact_params(query)
    if frag is not None:
        out += "#" + _redact_params(frag)
    return out


# URLs in free text: a scheme, '://', then up to whitespace or a quote/bracket; trailing punctuation is not part of it.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>`]+")
_TRAILING = ".,;:!?)]}>"
# key=value secrets: libpq keyword DSNs (password=x, sslpassword='x y'), environment lines (PGPASSWORD=x), ...
_KV = re.compile(
    r"(?P<key>(?<![A-Za-z0-9_.\-])[A-Za-z0-9_.\-]*?"
    r"(?:password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|pwd)[A-Za-z0-9_]*)"
    r"(?P<eq>\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*(?:'|$)|\"(?:[^\"\\]|\\.)*(?:\"|$)|[^\s'\"]+)",
    re.I)


def _redact_url_match(m: re.Match) -> str:
    url = m.group(0)
    tail = ""
    while url and url[-1] in _TRAILING:
        if url[-1] == "]" and "[" in url and url.count("[") >= url.count("]"):  # IPv6 host: '[::1]' ends the host
            break
        if url[-1] == ")" and url.count("(") >= url.count(")"):
            break
        tail = url[-1] + tail
        url = url[:-1]
    return redact_url(url) + tail


_NOT_SECRET_KEY = ("file", "_env", "_path", "_cmd", "_command")  # password_file=/etc/x.pass names a file, not a secret


def _redact_kv(m: re.Match) -> str:
    v, tail = m.group("value"), ""
    if v[0] not in "'\"":  # closing punctuation of the sentence is not part of an unquoted value: 'x (password=***).'
        core = v.rstrip(_TRAILING)
        v, tail = core or v, v[len(core):] if core else ""
    if v in (MASK, f"'{MASK}'", f'"{MASK}"') or m.group("key").lower().endswith(_NOT_SECRET_KEY):
        return m.group(0)
    return f"{m.group('key')}{m.group('eq')}{MASK}{tail}"


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through ``redact_url`` and ``password=...`` style pairs masked."""
    if not text:
        return text
    out, pos = [], 0
    for m in _URL_IN_TEXT.finditer(text):  # URLs via redact_url, the text between them via key=value masking
        out += [_KV.sub(_redact_kv, text[pos:m.start()]), _redact_url_match(m)]
        pos = m.end()
    out.append(_KV.sub(_redact_kv, text[pos:]))
    return "".join(out)


def url_secrets(url: str) -> list[str]:
    """The literal secret substrings of ``url`` (userinfo, token values, token path segments), longest first.

    For scrubbing messages that quote parts of a URL without quoting the whole URL, e.g.
    ``InvalidURL: nonnumeric port: 'token@host'``.
    """
    found: set[str] = set()
    m = _URL_SHAPE.match(url)
    if m is None:
        return []
    rest, query, frag = m.group("rest", "query", "frag")
    if m.group("slashes"):
        auth, path = _split_authority(rest)
        if "@" in auth:
            userinfo = auth.rsplit("@", 1)[0]
            secret = userinfo.split(":", 1)[1] if ":" in userinfo else userinfo  # user-only: a token as user name
            found.update({userinfo, secret, unquote_plus(secret)})
        red = _redact_path(auth, path).split("/")
        found.update(s for s, r in zip(path.split("/"), red) if s and r != s)
    for part in (query, frag):
        for pm in _PARAM.finditer(part or ""):
            if pm.group(3) and _secret_name(pm.group(2)):
                found.update({pm.group(3), unquote_plus(pm.group(3))})
    return sorted((s for s in found if len(s) >= 3 and s != MASK), key=len, reverse=True)
