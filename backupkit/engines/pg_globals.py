"""Cluster-wide objects (roles, tablespaces) dumped by ``pg_dumpall --globals-only``.

Owns the decision of which global statements to replay where, as a pure
function: tablespaces are never replayed (their LOCATION is a production path
and pg_restore runs with --no-tablespaces), and roles that already exist on the
destination are left alone (the ephemeral cluster's bootstrap superuser, or any
role of a real restore target), so only missing roles are created.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

_IDENT = r'("(?:[^"]|"")*"|[^\s;"]+)'
_ROLE_STMT = re.compile(rf"^(?:CREATE ROLE|ALTER ROLE|COMMENT ON ROLE|SECURITY LABEL (?:FOR \S+ )?ON ROLE) {_IDENT}", re.I)
_TABLESPACE_STMT = re.compile(
    r"^(?:CREATE TABLESPACE|ALTER TABLESPACE|COMMENT ON TABLESPACE|SECURITY LABEL (?:FOR \S+ )?ON TABLESPACE"
    r"|(?:GRANT|REVOKE) .* ON TABLESPACE )",
    re.I,
)

# psql errors that mean "it is already there": harmless when replaying globals.
TOLERATED_ERRORS = ("already exists", "is already a member", "already has")


def unquote_ident(token: str) -> str:
    """Given an SQL identifier as pg_dumpall prints it, return the name."""
    if token.startswith('"') and token.endswith('"'):
        return token[1:-1].replace('""', '"')
    return token.lower()


def filter_globals(sql_text: str, existing_roles: set[str]) -> tuple[str, list[str]]:
    """Given pg_dumpall --globals-only output and the roles the destination already has,
    return (the SQL to replay, a description of every skipped statement)."""
    kept: list[str] = []
    skipped: list[str] = []
    for line in sql_text.splitlines():
        stripped = line.strip()
        if _TABLESPACE_STMT.match(stripped):
            skipped.append(stripped[:120])
            continue
        m = _ROLE_STMT.match(stripped)
        if m and unquote_ident(m.group(1)) in existing_roles:
            skipped.append(stripped[:120])
            continue
        kept.append(line)
    return "\n".join(kept) + "\n", skipped


def psql_errors(stderr: str) -> tuple[list[str], list[str]]:
    """Given psql's stderr from replaying globals, return (fatal errors, tolerated errors)."""
    fatal, tolerated = [], []
    for line in stderr.splitlines():
        if "ERROR:" not in line:
            continue
        msg = line.split("ERROR:", 1)[1].strip()
        (tolerated if any(t in msg for t in TOLERATED_ERRORS) else fatal).append(msg)
    return fatal, tolerated
