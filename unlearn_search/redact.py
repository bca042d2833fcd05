"""Passwords out of everything the tool prints, logs or tags: pure functions over database and tracking URLs.

A URL can carry a password in its user-info (``postgresql://bob:secret@host/db``), where users often leave ``/``,
``#`` or ``@`` unescaped (``bob:p@ss/w#rd@host``: `urllib.parse` then splits it in the wrong place), or in its query
(``?password=...``, also ``sslpassword``, ``passwd``, ``pwd``, ``secret``, ``token``, ``api_key``, ``access_key``).
`secrets_in` finds each of these, `redact` replaces them in any text by ``***``. A reference to an environment
variable (``${PGPASSWORD}``, ``$PGPASSWORD``) is not a secret and is kept: it is the form to use on command lines.
"""

from __future__ import annotations

import re

#: Query parameters whose value is a secret (case-insensitive).
SECRET_KEYS = ("password", "sslpassword", "passwd", "pwd", "secret", "token", "api_key", "apikey", "access_key",
               "secret_key")
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@]*:(?P<password>.*)@[^@]*$", re.S)
_QUERY = re.compile(r"[?&;](?:" + "|".join(SECRET_KEYS) + r")=(?P<value>[^&;#]*)", re.I)
_ENV_REF = re.compile(r"^\$(\{\w+\}|\w+)$")


def secrets_in(url: str) -> list[str]:
    """The literal secrets ``url`` carries (its user-info password, secret query values), longest first."""
    found = []
    m = _USERINFO.match(url)
    if m and m.group("password"):
        found.append(m.group("password"))
    found += [q.group("value") for q in _QUERY.finditer(url) if q.group("value")]
    return sorted({s for s in found if not _ENV_REF.match(s)}, key=len, reverse=True)


def redact(text: str, url: str) -> str:
    """``text`` (an error message, a log line, the URL itself) with every secret of ``url`` replaced by ``***``."""
    for secret in secrets_in(url):
        text = text.replace(secret, "***")
    return text


def redact_uri(url: str) -> str:
    """The URL with every password it carries replaced by ``***`` (safe for logs, params and tags)."""
    return redact(url, url)


def has_literal_secret(url: str) -> bool:
    """Whether ``url`` spells a secret out (instead of ``${VAR}``); `mlflow run` records ``-P`` values verbatim."""
    return bool(secrets_in(url))
