"""The contract every database engine implements.

An engine owns everything that talks to one kind of database server: taking a
consistent dump with fingerprints from the same snapshot, provisioning a scratch
instance that is provably not production, restoring into it, checking it and
tearing it down. Engines never import actions, the repository or the ledger;
they receive what they need as arguments.

The artifact pipeline is *pull based*: an engine hands the sink a readable
binary stream (a subprocess's stdout, an open file) and the sink reads it to the
end, hashing, compressing, encrypting and writing as it goes. Restores are
*push based*: the restore source writes decrypted, decompressed, hash-checked
bytes into a writable stream the engine provides (a subprocess's stdin, a file).
Either way nothing is ever held in memory whole.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Protocol, TypeVar

from . import kit


T = TypeVar("T")


@dataclass
class StreamInfo:
    """What the artifact pipeline measured for one stream it wrote."""

    name: str
    file: str  # file name inside the backup directory, e.g. "data.zst.age"
    content_bytes: int
    content_sha256: str
    artifact_bytes: int
    artifact_sha256: str


class DumpSink(Protocol):
    """Where an engine's dump goes. Provided by the backup action."""

    workdir: Path  # private scratch space on the repository's disk (cleaned up by the caller)

    def write_stream(self, name: str, reader: BinaryIO) -> StreamInfo:
        """Read ``reader`` to EOF through the artifact pipeline into ``<name>.zst.age``.

        ``name`` is ``data`` for the main dump; engines may add others (``globals``).
        Raises on any I/O error; the caller then abandons the whole backup.
        """


class RestoreSource(Protocol):
    """A committed backup being restored. Provided by the drill/restore action."""

    def stream_names(self) -> list[str]:
        """Names of the streams in this backup (``data`` first)."""

    def stream_to(self, name: str, writer: BinaryIO) -> None:
        """Decrypt, decompress and write stream ``name`` into ``writer``.

        Both the artifact and the content SHA-256 are checked against the signed
        manifest; a mismatch raises VerificationFailed *after* the bytes were
        written, so the engine must not treat the restore as good until this
        returns.
        """

    def to_file(self, name: str, path: Path) -> Path:
        """Like stream_to, into a new file at ``path`` (for engines that need to seek)."""


@dataclass
class DumpResult:
    """What an engine reports about the dump it just wrote."""

    server_version: str
    # e.g. {"kind": "pg_lsn", "lsn": "0/1A2B3C", "snapshot": "00000003-...", "xmin": 1234, "time": iso}
    consistency: dict[str, Any]
    # table name -> {"rows": int, "hash": str | None}; taken in the same snapshot as the dump
    fingerprints: dict[str, dict[str, Any]]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckResult:
    """One drill check. ``status`` is "passed", "failed" or "skipped" (skipped is unproven)."""

    name: str
    status: str
    detail: str = ""
    proves_data: bool = False  # True for checks that prove the data itself (fingerprints)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scratch:
    """A provisioned scratch instance. Engines subclass or fill ``info``.

    ``describe`` is recorded in the drill record as proof the scratch is not
    production; ``teardown_proof`` is filled in by the engine when it is destroyed.
    """

    kind: str  # "ephemeral" | "database" | "file"
    info: dict[str, Any] = field(default_factory=dict)
    teardown_proof: dict[str, Any] = field(default_factory=dict)
    handle: Any = None  # engine-private: connection parameters, process, path
    replace_existing: bool = False  # restore --force: drop and replace objects the destination already has
    manifest: dict[str, Any] | None = None  # the signed manifest being restored (set by drill/restore before restore())


class DatabaseScratchMixin:
    """For engines whose ``database`` scratch is a uniquely named database on the scratch server
    (PostgreSQL, MariaDB): its name, and ``drop_leftover_scratch`` for it. The engine provides
    ``_scratch_admin(spec, what)`` (the admin endpoint of ``drill.scratch.dsn``) and
    ``_drop_database(admin, name, what)`` (drop it, return the teardown proof)."""

    @staticmethod
    def _scratch_database_name(policy, workdir: Path) -> str:
        return f"backupkit_drill_{policy.system.replace('-', '_')}_{kit.scratch_tag(workdir)}"

    def drop_leftover_scratch(self, *, policy, workdir: Path) -> dict[str, Any] | None:
        spec = policy.drill.scratch
        if spec.type != "database" or not spec.dsn:
            return None  # an ephemeral server lives in the work directory: cleanup stops and deletes it there
        what = f"policy {policy.system}: leftover drill scratch"
        return self._drop_database(self._scratch_admin(spec, what), self._scratch_database_name(policy, workdir), what)


class RestoreTargetMixin:
    """Optional engine verbs for a real emergency restore (``backupkit restore --to``)."""

    def restore_target(self, *, policy, dsn: str | None,
                       replace_source: bool = False) -> contextlib.AbstractContextManager[Scratch]:
        """Open the operator-named destination ``dsn`` as a Scratch of kind "target".

        Nothing is torn down on exit. Raise ConfigError if it resolves to the
        policy's source, unless ``replace_source`` (then the destination *is* the
        policy's source, and ``dsn`` is ignored: an emergency restore into production).
        """
        from ..errors import ConfigError

        raise ConfigError(f"engine {self.name} does not support 'backupkit restore --to'")

    def is_empty(self, *, scratch: Scratch) -> bool:
        """True when the destination holds no user tables."""
        raise NotImplementedError


S = TypeVar("S")


def run_beside(side: Callable[[], S], work: Callable[[], T], *, name: str) -> tuple[S, T]:
    """Run ``side()`` on a thread of its own (``name``) while ``work()`` runs in this one; return both
    results. ``work``'s error wins; else ``side``'s is raised (in this thread)."""
    result: list = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(side())
        except BaseException as e:  # re-raised below, in the caller's thread
            errors.append(e)

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    try:
        out = work()
    finally:
        worker.join()
    if errors:
        raise errors[0]
    return result[0], out


class Engine(RestoreTargetMixin, abc.ABC):
    """One database engine. Subclasses live in ``backupkit/engines/<name>.py``."""

    name: str = ""
    # zstd long-distance matching unless the policy says otherwise: it pays where the dump repeats itself
    # over megabytes (pg_dump's uncompressed custom archive), not for SQL text (mariadb-dump)
    long_distance: bool = True

    @abc.abstractmethod
    def dump(self, *, policy, sink: DumpSink) -> DumpResult:
        """Given a policy, dump its source consistently into ``sink`` and return
        the consistency point and fingerprints taken in the same snapshot.

        Connection failures raise JobFailed naming the system and host, never
        the password.
        """

    @abc.abstractmethod
    def scratch(self, *, policy, workdir: Path) -> contextlib.AbstractContextManager[Scratch]:
        """Provision a scratch instance per ``policy.drill.scratch``; destroy it on exit,
        even when the body raised, and fill ``teardown_proof``.

        Must raise ConfigError *before touching anything* when the scratch
        resolves to the policy's source.
        """

    def drop_leftover_scratch(self, *, policy, workdir: Path) -> dict[str, Any] | None:
        """After a drill was killed (SIGKILL, power loss) before its teardown: destroy what its scratch
        created *outside* ``workdir`` (the ``workdir`` it was given; the caller deletes the directory itself),
        and return the teardown proof; None when this engine's scratch keeps nothing elsewhere. Names come
        from ``kit.scratch_tag(workdir)``, so only what that very drill created is touched."""
        return None

    @abc.abstractmethod
    def restore(self, *, policy, scratch: Scratch, source: RestoreSource) -> None:
        """Restore every stream of ``source`` into ``scratch``."""

    @abc.abstractmethod
    def integrity_check(self, *, scratch: Scratch) -> list[CheckResult]:
        """Engine-native integrity checks of the restored copy (integrity_check, amcheck...)."""

    @abc.abstractmethod
    def fingerprints(self, *, scratch: Scratch, mode: str, like: dict | None = None) -> dict[str, dict[str, Any]]:
        """Compute fingerprints on the restored copy, same shape and mode as at dump time.

        ``like`` is the manifest's fingerprints: where an engine has more than one
        way to hash a table, it must use the one recorded there."""

    def check_restored(self, *, scratch: Scratch, mode: str, like: dict | None = None, key: bytes | None = None
                       ) -> tuple[list[CheckResult], dict[str, dict[str, Any]]]:
        """The drill's checks of a restored copy: ``integrity_check`` and ``fingerprints``. Engines
        may override this to overlap the two, as long as neither can see what the other creates.
        ``key`` is the backup's fingerprint key (keyed.py), for an engine that compares a hash with
        ``like``'s itself to skip work an equal hash makes needless; the drill still compares everything."""
        checks = self.integrity_check(scratch=scratch)
        return checks, self.fingerprints(scratch=scratch, mode=mode, like=like)

    def integrity_beside(self, scratch: Scratch, work: Callable[[], T], *, name: str) -> tuple[list[CheckResult], T]:
        """``integrity_check`` on a thread of its own (``name``) while ``work()`` runs in this one: for a
        ``check_restored`` that overlaps the two. ``work``'s error wins; else the integrity check's is raised."""
        return run_beside(lambda: self.integrity_check(scratch=scratch), work, name=name)

    @abc.abstractmethod
    def query_scalar(self, *, scratch: Scratch, sql: str) -> Any:
        """Run a policy assertion's SQL on the scratch copy and return the first column of the first row."""

    def describe_source(self, policy) -> str:
        """A human label for the source, without secrets (used in error messages)."""
        return policy.system

    def prune_native(self, *, policy, keep: list[dict], drop: list[dict], dry_run: bool) -> dict | None:
        """Given the (signature-checked) manifests of the backups retention keeps and of those it removes,
        remove what the engine's own tool holds for the removed ones only (never what a kept one needs);
        return {location, removed: [id], kept: {id: [why]}, warnings} for the ledger, or None when the engine keeps nothing
        of its own (the default: a backupkit artifact is self-contained)."""
        return None


def keeps_native(engine: Engine) -> bool:
    """Whether the engine's own tool keeps backups of its own that prune must also look after."""
    return type(engine).prune_native is not Engine.prune_native


@contextlib.contextmanager
def closing_all(*things) -> Iterator[None]:
    """Close every object on exit, ignoring errors from the close itself."""
    try:
        yield
    finally:
        for t in things:
            with contextlib.suppress(Exception):
                t.close()

