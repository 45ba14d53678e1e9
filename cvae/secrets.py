"""The one place that hides storage passwords: every path that prints or records a URL goes through it.

A password can sit in a URL's user info (``postgresql://user:secret@host/db``, with an empty user, or with
an unencoded ``@`` in it: libpq and SQLAlchemy split user info at the *last* ``@`` before the host) or in
its query (``?password=secret``). :func:`mask_secrets` works on any text (an error message, a log line, a
command line), :func:`split_password` takes the password out of a URL so that it can travel in an
environment variable instead of a command line. No heavy imports: ``cvae sweep status`` and the analysis
use it without loading Optuna or torch.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from urllib.parse import quote, unquote

MASK = "***"
PASSWORD_ENV = "CVAE_DB_PASSWORD"
PASSWORD_FILE_ENV = "CVAE_DB_PASSWORD_FILE"


class PasswordFileError(ValueError):
    """The file named by ``$CVAE_DB_PASSWORD_FILE`` cannot be read; the message names it."""

# scheme://[user]:password@host — the password runs to the last '@' that is followed by a host (no '@', '/',
# '?' or whitespace until the path, the query or the end).
_USERINFO = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@?\s]*:)(?P<pw>\S*?)(?P<tail>@[^@/?\s]*(?=[/?\s'\")]|$))"
)
_QUERY = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)(?P<pw>[^&\s'\"]*)", re.IGNORECASE)


def has_password(url: str) -> bool:
    """Whether ``url`` carries a password, in its user info or its query."""
    return bool(_USERINFO.search(url) or _QUERY.search(url))


def mask_secrets(text: str) -> str:
    """``text`` with every URL password (user info or ``password=`` query) replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", text)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)


mask_url = mask_secrets
"""``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (the same function)."""


def split_password(url: str) -> tuple[str, str | None]:
    """``postgresql://u:pw@h/db`` -> (``postgresql://u@h/db``, ``pw`` decoded); URLs without one pass through.

    A ``password=`` query parameter is taken out too (the user-info password wins when both are given).
    """
    password = None
    query = _QUERY.search(url)
    if query:
        password = unquote(query["pw"])
        url = _QUERY.sub(lambda m: "?" if m["head"].startswith("?") else "", url, count=1)
        url = url.replace("?&", "?").removesuffix("?")
    match = _USERINFO.search(url)
    if match:
        password = unquote(match["pw"])
        url = _USERINFO.sub(lambda m: m["head"][:-1] + m["tail"], url, count=1)
    return url, password


def mask_argv() -> None:
    """Replace this process's ``sys.argv`` by its masked form.

    Libraries record the command line: W&B puts ``sys.argv`` into every run's metadata (and online, on its
    servers). The parsed arguments keep the real values; only the recorded copy is masked.
    """
    sys.argv[:] = [mask_secrets(a) for a in sys.argv]


def with_password(url: str) -> str:
    """Insert the password from ``$CVAE_DB_PASSWORD``, or the file named by ``$CVAE_DB_PASSWORD_FILE`` (a
    Docker/Kubernetes secret), into a PostgreSQL URL that has none; other URLs pass through (libpq may still
    find ``PGPASSWORD`` or ``~/.pgpass``).

    Raises:
        PasswordFileError: the secrets file cannot be read.
    """
    if not url.startswith("postgresql") or has_password(url):
        return url
    password = os.environ.get(PASSWORD_ENV)
    secret = os.environ.get(PASSWORD_FILE_ENV)
    if password is None and secret:
        try:
            password = Path(secret).read_text().strip()
        except OSError as err:
            raise PasswordFileError(f"{PASSWORD_FILE_ENV}={secret}: cannot read ({err.strerror})") from None
    if not password:
        return url
    return re.sub(r"://([^/@:]+)@", lambda m: f"://{m[1]}:{quote(password, safe='')}@", url, count=1)


def hide_password_from_process_list(argv: list[str]) -> None:
    """Re-execute this command with a storage password moved from its arguments into ``$CVAE_DB_PASSWORD``.

    ``ps`` shows every process's command line to every user of the machine, for as long as it runs (a sweep:
    hours). The command starts again at once, its URL without the password (``postgresql://u@h/db``), which
    :func:`with_password` puts back from the environment, as the sweep's workers get theirs. Returns (without
    re-executing) when no argument holds a password.
    """
    clean, password = [], None
    for arg in argv:
        if has_password(arg):
            arg, found = split_password(arg)
            password = password or found
        clean.append(arg)
    if password is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "cvae", *clean], {**os.environ, PASSWORD_ENV: password})
