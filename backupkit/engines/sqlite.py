"""The SQLite engine: the embedded default for small departmental systems.

The dump is the database file itself, copied with SQLite's online backup API
from a connection that holds a read transaction, so the fingerprints and the
copy come from the same snapshot. The scratch is a private file; the restored
file is byte-identical to what was dumped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import sqlite3
import stat
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError, JobFailed
from ..failpoint import failpoint
from ..files import create_private
from ..repository import fsync_dir
from .base import CheckResult, DumpResult, DumpSink, Engine, RestoreSource, Scratch
from .kit import teardown_proof

logger = logging.getLogger(__name__)

MASK64 = (1 << 64) - 1


def _encode(v: Any) -> bytes:
    """A type-tagged, unambiguous byte form of one SQLite value."""
    if v is None:
        return b"N"
    if isinstance(v, int):
        return b"I" + str(v).encode() + b";"
    if isinstance(v, float):
        return b"R" + repr(v).encode() + b";"
    if isinstance(v, str):
        b = v.encode("utf-8")
        return b"T" + str(len(b)).encode() + b":" + b
    b = bytes(v)
    return b"B" + str(len(b)).encode() + b":" + b


def _row_hash(*values: Any) -> int:
    h = hashlib.sha256(b"".join(_encode(v) for v in values)).digest()
    return struct.unpack(">q", h[:8])[0]


class _SumMod64:
    """Order-independent aggregate: sum of row hashes modulo 2^64 (duplicates count)."""

    def __init__(self):
        self.total = 0

    def step(self, v):
        self.total = (self.total + v) & MASK64

    def finalize(self):
        return f"{self.total:016x}"


def _prepare(conn: sqlite3.Connection) -> None:
    conn.create_function("bk_row_hash", -1, _row_hash, deterministic=True)
    conn.create_aggregate("bk_sum64", 1, _SumMod64)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def user_tables(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]


def table_fingerprints(conn: sqlite3.Connection, mode: str) -> dict[str, dict[str, Any]]:
    """Row count, and in ``full`` mode an order-independent content hash, per table."""
    _prepare(conn)
    out: dict[str, dict[str, Any]] = {}
    for t in user_tables(conn):
        if mode == "full":
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({_quote(t)})")]
            args = ", ".join(_quote(c) for c in cols)
            n, h = conn.execute(f"SELECT count(*), bk_sum64(bk_row_hash({args})) FROM {_quote(t)}").fetchone()
            out[t] = {"rows": n, "hash": h if n else f"{0:016x}"}
        else:
            out[t] = {"rows": conn.execute(f"SELECT count(*) FROM {_quote(t)}").fetchone()[0], "hash": None}
    return out


def open_by(*paths: Path) -> list[str]:
    """Processes (``pid NAME``) that hold any of ``paths`` open, from /proc (those we may inspect)."""
    wanted = set()
    for p in paths:
        with contextlib.suppress(OSError):
            st = os.stat(p)
            wanted.add((st.st_dev, st.st_ino))
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        if proc.name == str(os.getpid()):
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(fd)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in wanted:
                try:
                    name = (proc / "comm").read_text().strip()
                except OSError:
                    name = "?"
                found.append(f"pid {proc.name} ({name})")
                break
    return found


class SqliteEngine(Engine):
    name = "sqlite"

    def _source_path(self, policy) -> Path:
        if policy.source.path is None:
            raise ConfigError(f"policy {policy.system}: field 'source.path' is required for engine sqlite")
        return Path(policy.source.path)

    def _connect_ro(self, policy) -> sqlite3.Connection:
        path = self._source_path(policy)
        if not path.is_file():
            raise JobFailed(f"policy {policy.system}: SQLite source {path} does not exist; check source.path")
        try:
            return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=30)
        except sqlite3.Error as e:
            raise JobFailed(f"policy {policy.system}: cannot open SQLite source {path}: {e}") from None

    def describe_source(self, policy) -> str:
        return f"sqlite {policy.source.path}"

    def dump(self, *, policy, sink: DumpSink) -> DumpResult:
        """Given a policy, copy its SQLite file consistently into the sink and fingerprint the same snapshot."""
        conn = self._connect_ro(policy)
        copy = sink.workdir / "snapshot.sqlite"
        try:
            conn.execute("BEGIN")  # one read transaction: fingerprints and backup see one snapshot
            data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            at = datetime.now(timezone.utc).isoformat()
            fps = table_fingerprints(conn, policy.drill.fingerprint)
            create_private(copy).close()  # plaintext patient data: 0600 before the first page is written
            out = sqlite3.connect(copy)
            try:
                conn.backup(out, pages=0)
            finally:
                out.close()
            conn.execute("COMMIT")
            version = sqlite3.sqlite_version
        except sqlite3.Error as e:
            hint = f"; free space under {sink.workdir.parent.parent}" if "full" in str(e) else ""
            raise JobFailed(f"policy {policy.system}: SQLite backup of {policy.source.path} into {copy} failed: {e}{hint}") from None
        finally:
            conn.close()
        failpoint("sqlite-snapshot-written")
        with open(copy, "rb") as f:
            sink.write_stream("data", f)
        copy.unlink()
        return DumpResult(
            server_version=f"SQLite {version}",
            consistency={"kind": "sqlite", "exactness": "exact", "data_version": data_version, "time": at},
            fingerprints=fps,
        )

    @contextlib.contextmanager
    def scratch(self, *, policy, workdir: Path) -> Iterator[Scratch]:
        """A private scratch file under ``workdir``; refused if it would be the source file."""
        if policy.drill.scratch.type != "ephemeral":
            raise ConfigError(f"policy {policy.system}: drill.scratch.type must be 'ephemeral' for engine sqlite")
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / f"scratch-{policy.system}-{secrets.token_hex(4)}.sqlite"
        src = Path(policy.source.path).resolve() if policy.source.path else None
        if src is not None and path.resolve() == src:
            raise ConfigError(f"policy {policy.system}: scratch file {path} is the source; refusing")
        s = Scratch(kind="file", info={"path": str(path), "source": str(src), "is_source": False}, handle=path)
        try:
            yield s
        finally:
            side = {"wal": Path(f"{path}-wal"), "shm": Path(f"{path}-shm"), "journal": Path(f"{path}-journal")}
            for p in (path, *side.values()):
                p.unlink(missing_ok=True)
            # kit's form (``*_exists`` keys, so kit.proof_clean can judge it) plus the older key reports read
            s.teardown_proof = {**teardown_proof(paths={"path": path, **side}),
                                "exists_after_teardown": os.path.lexists(path)}

    def restore(self, *, policy, scratch: Scratch, source: RestoreSource) -> None:
        """Write the restored file beside its destination, then put it in place.

        Over an existing database (``restore --force``) the destination and its ``-wal``, ``-shm`` and
        ``-journal`` are replaced as one operation: refused while any process holds them open; the old
        side files are renamed away *before* the restored file is renamed in (a stale WAL must never be
        replayed onto the restored data), and the destination keeps its owner and mode."""
        path: Path = scratch.handle
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.restoring-{os.getpid()}")
        side = [Path(f"{path}{suffix}") for suffix in ("-wal", "-shm", "-journal")]
        try:
            st = os.stat(path) if scratch.kind == "target" and path.exists() else None
            if st is not None:
                holders = open_by(path, *side)
                if holders:
                    raise JobFailed(f"restore into {path}: the database is open by {', '.join(holders)}; "
                                    "stop that application first (nothing was changed)")
            source.to_file("data", tmp)
            if st is not None:
                os.chmod(tmp, stat.S_IMODE(st.st_mode))
                with contextlib.suppress(PermissionError):
                    os.chown(tmp, st.st_uid, st.st_gid)
            aside = []
            for p in side:
                if p.exists():
                    moved = p.with_name(f".{p.name}.replaced-{os.getpid()}")
                    os.replace(p, moved)
                    aside.append(moved)
            os.replace(tmp, path)
            fsync_dir(path.parent)
            for p in aside:
                p.unlink(missing_ok=True)
        finally:
            tmp.unlink(missing_ok=True)

    def integrity_check(self, *, scratch: Scratch) -> list[CheckResult]:
        with contextlib.closing(sqlite3.connect(scratch.handle)) as conn:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        ok = rows == ["ok"]
        out = [CheckResult("sqlite integrity_check", "passed" if ok else "failed", "ok" if ok else "; ".join(rows[:5]))]
        out.append(CheckResult("sqlite foreign_key_check", "failed" if fk else "passed",
                               f"{len(fk)} violations" if fk else "no violations"))
        return out

    def fingerprints(self, *, scratch: Scratch, mode: str, like: dict | None = None) -> dict[str, dict[str, Any]]:
        with contextlib.closing(sqlite3.connect(f"file:{scratch.handle}?mode=ro", uri=True)) as conn:
            return table_fingerprints(conn, mode)

    def query_scalar(self, *, scratch: Scratch, sql: str) -> Any:
        with contextlib.closing(sqlite3.connect(f"file:{scratch.handle}?mode=ro", uri=True)) as conn:
            row = conn.execute(sql).fetchone()
        return row[0] if row else None

    # ---- real restore ----------------------------------------------------

    @contextlib.contextmanager
    def restore_target(self, *, policy, dsn: str | None, replace_source: bool = False) -> Iterator[Scratch]:
        """The destination file of a real restore; overwriting a live file needs --force (non-empty check).
        The source file itself is refused unless ``replace_source``."""
        src = self._source_path(policy).resolve()
        path = src if replace_source else Path(str(dsn)).expanduser().absolute()
        if not replace_source and path.resolve() == src:
            raise ConfigError(f"policy {policy.system}: restore target {path} is the source database; a restore never "
                              "writes into production unless you pass --replace-source (see docs/operations.md)")
        yield Scratch(kind="target", info={"path": str(path), "replaces_source": replace_source}, handle=path)

    def is_empty(self, *, scratch: Scratch) -> bool:
        path: Path = scratch.handle
        if not path.exists() or path.stat().st_size == 0:
            return True
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return not user_tables(conn)
