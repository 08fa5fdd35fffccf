"""PostgreSQL physical mode on pgBackRest (``engine: postgres``, ``source.mode: pgbackrest``).

Backup: check the server archives WAL through pgBackRest (print the exact lines to add when not;
never edit anything), ``pgbackrest check``, ``pgbackrest backup --type full|diff|incr
--start-fast``, then fingerprint the source in a snapshot tied to a WAL position L after the
backup's end (pgbackrest_snapshot.py), switch WAL and wait until L's segment is archived, and
stream one tar of the repository files needed to recover to L (the backup set and its chain, the
info files, the WAL from the backup's start to L) through the artifact pipeline as stream ``data``.

Drill: unpack the tar into a private repository, ``pgbackrest restore`` it into a private data
directory with ``recovery_target_lsn = L`` (exclusive) and promote, on a private Unix socket, as
the ``postgres`` OS user when root; ``pg_checksums --check`` on the stopped copy when it has data
checksums, amcheck, fingerprints and assertions as the logical engine does them
(docs/pgbackrest.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import psycopg

from ..errors import BackupkitError, ConfigError, JobFailed, VerificationFailed
from .base import CheckResult, DumpResult, DumpSink, Engine, RestoreSource, Scratch
from .kit import free_port, read_secret
from .pg_cluster import find_tool as pg_find_tool, private_root, server_os_user
from .pg_conn import Endpoint, connect, dsn_endpoint, same_database_by_address, source_endpoint
from .pg_fingerprint import FORMAT as FINGERPRINT_FORMAT, KEY_FORMAT
from .pgbackrest_cluster import RestoredCluster, chown_tree
from .pgbackrest_plan import (archive_id, backup_facts, chain, expire_plan, lsn_int, new_backup, parse_segment, segment_of_lsn,
                              segment_name, segments_between, settings_message, settings_problems, stanza_info)
from .pg_walcut import Snapshot, find_cut, lsn_text
from .pgbackrest_repo import (ARCHIVE_WAIT, TAR_ROOT, MemberFeed, Packer, PgBackrest, find_pgbackrest, repo_cipher, repo_members, repo_owner, repo_path,
                              segment_files, unpack, wait_archived)
from .pgbackrest_snapshot import (UNLOGGED_WHY, mark_unlogged, read_positions, sequence_positions,
                                  snapshot_fingerprints, unlogged_keys)
from .pgbackrest_walscan import WalScan, read_commits, scan_window
from .postgres import PgScratch, PostgresEngine

logger = logging.getLogger(__name__)


class _Packing:
    """The backup set streamed into ``sink`` by a thread (``sink.write_stream`` of the Packer's pipe)
    while the dump goes on; ``result`` joins it, ``abandon`` stops it after a failure."""

    def __init__(self, sink: DumpSink, packer: Packer):
        self.packer = packer
        self.info = self.error = None
        self.t0 = time.monotonic()
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._write, args=(sink,), name="pgbackrest-stream", daemon=True)
        self.thread.start()

    def _write(self, sink: DumpSink) -> None:
        try:
            self.info = sink.write_stream("data", self.packer.reader)
        except BaseException as e:  # re-raised by result() in the dump's thread
            self.error = e
            with contextlib.suppress(OSError):
                self.packer.reader.close()  # the packer's next write fails instead of blocking
        self.seconds = time.monotonic() - self.t0

    def result(self, what: str):
        """(stream info, members packed, seconds): after the last member; the sink's or the packer's error."""
        self.thread.join()
        if self.error is not None:
            self.packer.thread.join(timeout=30)
            raise self.error
        return self.info, self.packer.finish(what), self.seconds

    def abandon(self) -> None:
        self.thread.join()  # the cancelled feed ends the tar, so the sink sees its end
        self.packer.thread.join(timeout=30)


@dataclass
class PhysicalScratch(PgScratch):
    """PgScratch (what the logical engine's checks use) plus the restored cluster."""

    restored: RestoredCluster | None = None
    superuser: str = "postgres"


class PgBackrestEngine(Engine):
    """PostgreSQL backed up by pgBackRest; restored copies are checked like logical ones."""

    name = "postgres"

    def __init__(self) -> None:
        self._pg = PostgresEngine()  # amcheck, fingerprints and assertions on the restored copy

    def describe_source(self, policy) -> str:
        return (f"PostgreSQL at {source_endpoint(policy, with_password=False).label} "
                f"(pgBackRest stanza {policy.source.pgbackrest.stanza})")

    # ---- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _cfg(policy):
        cfg = policy.source.pgbackrest
        if cfg is None:
            raise ConfigError(f"policy {policy.system}: mode pgbackrest needs a source.pgbackrest block with 'stanza'")
        return cfg

    def _tool(self, policy, what: str) -> PgBackrest:
        cfg = self._cfg(policy)
        try:
            binary = find_pgbackrest(cfg.bin)
        except ConfigError as e:
            raise ConfigError(f"{what}: {e}") from None
        repo = repo_path(cfg, cfg.repo)
        run_as = None
        if os.geteuid() == 0:
            run_as = cfg.os_user or repo_owner(repo) or "postgres"
            if run_as == "root":
                run_as = None
        return PgBackrest(binary, cfg.stanza, cfg.config, run_as, what)

    # ---- backup -------------------------------------------------------------------------------------

    def dump(self, *, policy, sink: DumpSink) -> DumpResult:
        what = f"policy {policy.system}"
        cfg = self._cfg(policy)
        tool = self._tool(policy, what)
        src = source_endpoint(policy)
        repo = repo_path(cfg, cfg.repo)
        conn = connect(src, what=what)
        check = connect(src, what=what)
        try:
            facts = self._facts(conn, cfg, what)
            floor = read_positions(check)  # sequences' lower bound for a recovery target inside the backup's WAL
            tool.run("check", timeout=600)
            before = {b["label"] for b in stanza_info(tool.info(), cfg.stanza).get("backup") or []}
            t0 = time.monotonic()
            tool.run("backup", f"--type={cfg.type}", f"--repo={cfg.repo}",
                     "--start-fast" if cfg.start_fast else "--no-start-fast")
            backup_seconds = time.monotonic() - t0
            stanza = stanza_info(tool.info(), cfg.stanza)
            backup = new_backup(before, stanza)
            if backup is None:
                raise JobFailed(f"{what}: pgbackrest backup succeeded but no new backup is listed by pgbackrest info")
            try:
                labels = chain(stanza, backup["label"])
            except KeyError as e:
                raise JobFailed(f"{what}: pgBackRest backup {backup['label']} depends on backup {e.args[0]}, which "
                                "pgbackrest info no longer lists (expired?); take a full backup (type: full)") from None
            facts_pb = backup_facts(backup, labels)
            arch = archive_id(stanza, backup)
            archive_dir = repo / "archive" / cfg.stanza / arch
            # Pack, compress and encrypt the backup set while the fingerprints are taken; its WAL follows
            # once the snapshot is placed and the last segment archived (same tar order as packed at the end).
            feed = MemberFeed(repo_members(repo, cfg.stanza, labels, arch, [])[0])
            packing = _Packing(sink, Packer(feed).start())
            try:
                scan = WalScan(tool=tool, check=check, archive_dir=archive_dir, seg_size=facts["wal_segment_size"],
                               wal_start=facts_pb["wal_start"], major=facts["server_major"],
                               bin_dir=(policy.source.options or {}).get("bin_dir"), what=what)
                consistency, fps = snapshot_fingerprints(conn, check, policy.drill.fingerprint, what, resolve=scan,
                                                         floor=floor)
                (last_seg,) = check.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
                try:
                    segments = segments_between(facts_pb["wal_start"], last_seg, facts["wal_segment_size"])
                except ValueError as e:
                    raise JobFailed(f"{what}: {e}") from None
                wait_archived(archive_dir, segments[-1], what, ARCHIVE_WAIT)
                wal, missing = segment_files(archive_dir, segments)
                if missing:
                    raise JobFailed(f"{what}: WAL segment {missing[0]} is missing from the pgBackRest archive "
                                    f"{archive_dir} ({len(missing)} of {len(segments)} segments needed from "
                                    f"{segments[0]} to {segments[-1]}); the backup cannot be recovered; check "
                                    "archive_command and run 'pgbackrest check'")
                feed.finish([(f, f"{TAR_ROOT}/archive/{cfg.stanza}/{arch}/{f.parent.name}/{f.name}") for f in wal])
            except BaseException:
                feed.cancel()
                packing.abandon()
                raise
        finally:
            for c in (conn, check):
                with contextlib.suppress(Exception):
                    c.close()
        manifest_file = repo / "backup" / cfg.stanza / backup["label"] / "backup.manifest"
        info, count, stream_seconds = packing.result(what)
        details = {
            **facts, "mode": "pgbackrest", "fingerprint_mode": policy.drill.fingerprint,
            "fingerprint_format": FINGERPRINT_FORMAT, "fingerprint_keys": KEY_FORMAT,
            "pgbackrest": {**facts_pb, "stanza": cfg.stanza, "archive_id": arch, "repo": cfg.repo,
                           "manifest_sha256": hashlib.sha256(manifest_file.read_bytes()).hexdigest(),
                           "manifest_bytes": manifest_file.stat().st_size,
                           "wal_segments": [segments[0], segments[-1]], "wal_count": len(segments),
                           "tar_members": count, "backup_seconds": round(backup_seconds, 3),
                           "stream_seconds": round(stream_seconds, 3), "repo_cipher": repo_cipher(cfg, cfg.repo)},
            "content_bytes": info.content_bytes,
        }
        consistency.update(backup_label=backup["label"], backup_lsn_start=facts_pb["lsn_start"],
                           backup_lsn_stop=facts_pb["lsn_stop"])
        logger.info("%s: pgBackRest %s backup %s packed (%d files, %d WAL segments, %d bytes)", what,
                    facts_pb["type"], backup["label"], count, len(segments), info.content_bytes)
        return DumpResult(server_version=facts["server_version"], consistency=consistency, fingerprints=fps,
                          details=details)

    # ---- retention ----------------------------------------------------------------------------------

    def prune_native(self, *, policy, keep: list[dict], drop: list[dict], dry_run: bool) -> dict | None:
        """``pgbackrest expire --set`` for every backup set that only pruned backups need (with
        ``expire: true``): sets a kept backup's chain needs, and sets backupkit did not take, stay."""
        cfg = self._cfg(policy)
        if not cfg.expire:
            return None
        what = f"policy {policy.system}: pgBackRest expire"
        needed, dropped = set(), set()
        for manifests, into in ((keep, needed), (drop, dropped)):
            for m in manifests:
                pb = (m.get("details") or {}).get("pgbackrest") or {}
                if pb.get("stanza") == cfg.stanza:
                    into.update(pb.get("chain") or [pb.get("label")])
        tool = self._tool(policy, what)
        present = {b["label"] for b in stanza_info(tool.info(), cfg.stanza).get("backup") or []}
        plan = expire_plan(present, needed, dropped)
        removed, warnings = [], []
        for label in ([] if dry_run else plan):
            try:
                tool.run("expire", f"--repo={cfg.repo}", f"--set={label}", timeout=3600)
            except JobFailed as e:
                warnings.append(str(e))
                continue
            removed.append(label)
        if removed:
            logger.info("%s: expired backup set(s) %s", what, ", ".join(removed))
        kept = {label: ["a kept backup restores from it" if label in needed else "no backup retention removed uses it"]
                for label in sorted(present - set(removed if not dry_run else plan))}
        return {"location": f"pgbackrest:{cfg.stanza}:repo{cfg.repo}", "removed": plan if dry_run else removed,
                "kept": kept, "warnings": warnings}

    @staticmethod
    def _facts(conn: psycopg.Connection, cfg, what: str) -> dict[str, Any]:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
            "pg_is_in_recovery(), current_database(), current_setting('wal_level'), current_setting('archive_mode'), "
            "current_setting('archive_command'), current_setting('data_checksums'), "
            "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), "
            "(SELECT rolname FROM pg_roles WHERE oid = 10), (SELECT system_identifier FROM pg_control_system())"
        ).fetchone()
        settings = {"wal_level": row[4], "archive_mode": row[5], "archive_command": row[6]}
        if row[2]:
            raise ConfigError(f"{what}: the source is a standby; physical mode backs up the primary "
                              "(point source at the primary)")
        lines = settings_problems(settings, stanza=cfg.stanza, config=str(cfg.config) if cfg.config else None)
        if lines:
            raise ConfigError(settings_message(what, lines, settings))
        return {"server_version": row[0], "server_version_num": row[1], "server_major": row[1] // 10000,
                "database": row[3], "data_checksums": row[7] == "on", "wal_segment_size": int(row[8]),
                "bootstrap_superuser": row[9], "system_identifier": str(row[10]), **settings}

    # ---- scratch ------------------------------------------------------------------------------------

    def _refuse_source(self, policy, workdir: Path, what: str) -> dict[str, Any]:
        """ConfigError when the scratch could be the source: a database scratch (a physical copy needs its
        own cluster), or a work directory inside the source's data directory or the pgBackRest repository."""
        spec = policy.drill.scratch
        src = source_endpoint(policy, with_password=False)
        if spec.type != "ephemeral":
            same = ""
            if spec.dsn:
                with contextlib.suppress(BackupkitError):
                    if same_database_by_address(dsn_endpoint(spec.dsn, what=what), src):
                        same = f" and drill.scratch.dsn is the source database {src.label} itself"
            raise ConfigError(f"{what}: mode pgbackrest drills into its own ephemeral cluster only (a physical copy "
                              f"is a whole server){same}; set drill.scratch.type: ephemeral")
        checked: dict[str, Any] = {"scratch": "ephemeral cluster restored into a private directory"}
        protected = [("pgBackRest repository", repo_path(self._cfg(policy), self._cfg(policy).repo))]
        with contextlib.suppress(BackupkitError, psycopg.Error):
            probe = Endpoint({**src.params, "connect_timeout": "5"}, source_endpoint(policy).password)
            with connect(probe, what=what, pinned=False) as c:
                (datadir,) = c.execute("SELECT current_setting('data_directory')").fetchone()
            protected.append(("source data directory", Path(datadir)))
            checked["source_data_directory"] = datadir
        work = Path(os.path.realpath(workdir))
        for label, p in protected:
            rp = Path(os.path.realpath(p))
            if work == rp or rp in work.parents or work in rp.parents:
                raise ConfigError(f"{what}: the drill work directory {work} overlaps the {label} {rp}; the restore "
                                  "would write into production. Set work_dir in the backupkit config elsewhere")
        return checked

    @contextlib.contextmanager
    def scratch(self, *, policy, workdir: Path) -> Iterator[Scratch]:
        what = f"policy {policy.system}: drill scratch"
        cfg = self._cfg(policy)
        checked = self._refuse_source(policy, Path(workdir), what)
        run_as = server_os_user()
        binary = find_pgbackrest(cfg.bin)
        root = private_root(Path(workdir), run_as)
        sockdir = Path(tempfile.mkdtemp(prefix="bk-pgbr-"))
        if run_as:
            chown_tree(sockdir, run_as)
        cluster = RestoredCluster(root=root, sockdir=sockdir, port=free_port(), bindir=Path("/nonexistent"),
                                  run_as=run_as, pgbackrest=binary, stanza=cfg.stanza, what=f"policy {policy.system}")
        dbname = source_endpoint(policy, with_password=False).dbname
        handle = PhysicalScratch(endpoint=Endpoint({}), bindir=cluster.bindir, workdir=Path(workdir),
                                 globals_mode="skip", keep_owners=True, create_database=False,
                                 amcheck=policy.drill.amcheck, restored=cluster)
        scratch = Scratch(kind="ephemeral", handle=handle)
        scratch.info = {"engine": "postgres", "mode": "pgbackrest", "datadir": str(cluster.datadir),
                        "socket_dir": str(sockdir), "port": cluster.port, "listen_addresses": "",
                        "os_user": run_as or os.environ.get("USER", str(os.getuid())), "database": dbname,
                        "refusal_checks": checked,
                        "not_production": "private data directory restored for this drill by pgBackRest from the "
                                          "backup's own artifact, on a private Unix socket, archiving off"}
        try:
            yield scratch
        finally:
            scratch.teardown_proof = cluster.destroy()

    # ---- restore ------------------------------------------------------------------------------------

    def restore(self, *, policy, scratch: Scratch, source: RestoreSource,
                target_lsn: str | None = None, target_time: str | None = None) -> None:
        h: PhysicalScratch = scratch.handle
        cluster = h.restored
        self._cfg(policy)
        manifest = scratch.manifest or {}
        details = manifest.get("details") or {}
        pb = details.get("pgbackrest") or {}
        what = f"policy {policy.system}: physical restore"
        if not pb.get("label"):
            raise VerificationFailed(f"{what}: the manifest has no pgBackRest backup label (details.pgbackrest); "
                                     "is this a backup of mode pgbackrest?")
        major = int(details["server_major"])
        try:
            cluster.bindir = pg_find_tool("pg_ctl", major, bin_dir=(policy.source.options or {}).get("bin_dir")).parent
        except ConfigError as e:
            raise ConfigError(f"{what}: a physical copy needs the server of the backup's major version: {e}") from None
        h.bindir = cluster.bindir
        t0 = time.monotonic()
        (cluster.root / "unpacked").mkdir(mode=0o700)
        members = unpack(source, "data", cluster.root / "unpacked", what)
        unpack_seconds = time.monotonic() - t0
        seg_from, seg_to = pb["wal_segments"]
        seg_size = int(details["wal_segment_size"])
        archive_dir = cluster.repo / "archive" / pb["stanza"] / pb["archive_id"]
        _, missing = segment_files(archive_dir, segments_between(seg_from, seg_to, seg_size))
        if missing:
            raise VerificationFailed(f"{what}: WAL segment {missing[0]} is missing from the backup's data stream "
                                     f"({len(missing)} missing of the range {seg_from}..{seg_to} recorded at backup); "
                                     "the backup cannot be recovered to its consistency point")
        target = target_lsn or (None if target_time else manifest["consistency"]["lsn"])
        h.superuser = cluster.superuser = details.get("bootstrap_superuser") or "postgres"
        cluster.manifest_details = pb
        live = last_available = None
        if target_time is not None:  # point in time: every WAL segment archived since, from the live repository
            live, last_available = self._wal_from_live(policy, pb, seg_size, cluster, what)
            scratch.info["pitr"] = {"wal_from_live_repository": live, "last_wal_available": last_available}
        try:
            pgbr_seconds, promote_seconds = self._recover(policy, cluster, pb["label"], target, target_time, what)
        except BackupkitError as e:
            if target_time is None or not cluster.ended_before_target():
                raise
            raise VerificationFailed(
                f"{what}: recovery ended before reaching --to-time {target_time}: the archived WAL ends with segment "
                f"{last_available} (the backup's {seg_from}..{seg_to}"
                + (f", then {'..'.join(dict.fromkeys(live))} from the live pgBackRest repository" if live else
                   ", nothing newer in the live pgBackRest repository")
                + "); choose an earlier --to-time, or wait until WAL with a transaction committed after it is archived "
                "(recovery stops only at such a commit)") from e
        scratch.info["restore_command"] = cluster.restore_command()
        restore_seconds = time.monotonic() - t0 - promote_seconds
        h.endpoint = Endpoint(cluster.params(h.superuser, scratch.info["database"]))
        with connect(h.endpoint, what=what, pinned=False) as c:
            sysid, checksums = c.execute("SELECT (SELECT system_identifier FROM pg_control_system())::text, "
                                         "current_setting('data_checksums')").fetchone()
            if target_time is not None:
                replay_lsn, xact_time = c.execute("SELECT pg_last_wal_replay_lsn()::text, "
                                                  "pg_last_xact_replay_timestamp()").fetchone()
                tli, _ = parse_segment(seg_to, seg_size)
                replayed = segments_between(seg_from, segment_of_lsn(tli, replay_lsn, seg_size), seg_size)
                scratch.info["pitr"].update(
                    wal_replayed={"first": replayed[0], "last": replayed[-1], "count": len(replayed)},
                    replay_lsn=replay_lsn, recovery_stopped=cluster.recovery_stop(),
                    last_replayed_transaction=xact_time.isoformat() if xact_time else None)
        scratch.info.update(
            postmaster_pid=cluster.pid, server_major=major, tar_members=members, backup_label=pb["label"],
            data_checksums=checksums == "on", system_identifier=sysid,
            recovery={"target_lsn": target, "target_time": target_time, "inclusive": False,
                      "stopped": cluster.recovery_stop(), "promoted": True,
                      "restore_seconds": round(restore_seconds, 3), "replay_seconds": round(promote_seconds, 3),
                      "unpack_seconds": round(unpack_seconds, 3), "pgbackrest_restore_seconds": round(pgbr_seconds, 3)})
        if details.get("system_identifier") and sysid != details["system_identifier"]:
            raise VerificationFailed(f"{what}: the restored cluster's system identifier {sysid} is not the source's "
                                     f"{details['system_identifier']}")

    def _recover(self, policy, cluster: RestoredCluster, label: str, target: str | None, target_time: str | None,
                 what: str) -> tuple[float, float]:
        """Configure, ``pgbackrest restore`` and start ``cluster``; wait for promotion. Returns (restore, replay) seconds."""
        cfg = self._cfg(policy)
        cipher = None
        encrypted = (cluster.manifest_details or {}).get("repo_cipher", "none") != "none"
        if encrypted and cfg.cipher_pass_file is None:
            raise ConfigError(f"{what}: the backup's pgBackRest repository is encrypted "
                              f"({cluster.manifest_details['repo_cipher']}); set source.pgbackrest.cipher_pass_file "
                              "to a 0600 file holding the repository's cipher pass")
        if encrypted:
            cipher = read_secret(password_file=cfg.cipher_pass_file, password_env=None,
                                 what=f"policy {policy.system}: source.pgbackrest.cipher_pass_file")
        t0 = time.monotonic()
        cluster.configure(cipher)
        cluster.restore(label, target, target_time)
        command = cluster.restore_command()
        if str(cluster.conf) not in (command or ""):
            raise JobFailed(f"{what}: pgbackrest restore wrote restore_command {command!r}, which does not read "
                            f"the drill's private repository ({cluster.conf}); refusing to start the copy")
        restore_seconds = time.monotonic() - t0
        cluster.start(cfg.recovery_timeout)
        promote = cluster.wait_promoted(cluster.superuser, cfg.recovery_timeout)
        return restore_seconds, promote

    # ---- WAL beyond the artifact's own range (cross-proof, point-in-time drill) ---------------------

    def _wal_from_live(self, policy, pb: dict, seg_size: int, cluster: RestoredCluster, what: str,
                       upto: str | None = None) -> tuple[list[str] | None, str]:
        """Copy WAL segments after the artifact's own range (``details.pgbackrest.wal_segments``) from the
        live pgBackRest archive into ``cluster``'s private repository: up to ``upto`` (every one must be
        there, else VerificationFailed naming the first missing), or without ``upto`` every segment archived
        after the range on its timeline, up to the first gap. Returns ([first, last] copied, or None when
        nothing was needed or there was nothing more, and the last segment the private repository holds)."""
        cfg = self._cfg(policy)
        have_last = pb["wal_segments"][1]
        tli, have_no = parse_segment(have_last, seg_size)
        live = repo_path(cfg, cfg.repo) / "archive" / pb["stanza"] / pb["archive_id"]
        if upto is not None:
            if parse_segment(upto, seg_size)[1] <= have_no:
                return None, have_last
            extra = segments_between(have_last, upto, seg_size)[1:]
            files, missing = segment_files(live, extra)
            if missing:
                raise VerificationFailed(f"{what}: WAL segment {missing[0]} is needed beyond the backup's own range "
                                         f"and is not (yet) in the pgBackRest archive {live}")
        else:
            extra, files = [], []
            while True:
                seg = segment_name(tli, have_no + len(extra) + 1, seg_size)
                found, _ = segment_files(live, [seg])
                if not found:
                    break
                extra.append(seg)
                files += found
            if not extra:
                return None, have_last
        dest = cluster.repo / "archive" / pb["stanza"] / pb["archive_id"]
        for f in files:
            (dest / f.parent.name).mkdir(exist_ok=True)
            shutil.copy2(f, dest / f.parent.name / f.name)
        chown_tree(dest, cluster.run_as)
        return [extra[0], extra[-1]], extra[-1]

    # ---- cross-proof against a logical backup ------------------------------------------------------

    def fingerprints_at(self, *, policy, scratch: Scratch, lsn: str, mode: str, like: dict,
                        logical_manifest: dict) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """Recover a second copy of the drilled backup to ``lsn`` (a logical backup's snapshot), fingerprint
        it like that logical manifest, destroy it; return (fingerprints, facts). WAL beyond the artifact's
        range comes from the live pgBackRest repository (recorded in the facts)."""
        h: PhysicalScratch = scratch.handle
        first = h.restored
        details = (scratch.manifest or {}).get("details") or {}
        pb = details["pgbackrest"]
        what = f"policy {policy.system}: cross-proof at LSN {lsn}"
        seg_size = int(details["wal_segment_size"])
        if lsn_int(lsn) < lsn_int(pb["lsn_stop"]):
            raise VerificationFailed(f"{what}: the LSN is before the physical backup's end {pb['lsn_stop']}")
        tli, _ = parse_segment(pb["wal_segments"][1], seg_size)
        facts: dict[str, Any] = {"target_lsn": lsn}
        facts["wal_from_live_repository"], _ = self._wal_from_live(policy, pb, seg_size, first, what,
                                                                   upto=segment_of_lsn(tli, lsn, seg_size))
        snap = (logical_manifest.get("consistency") or {}).get("txid_snapshot")
        if snap:  # the logical snapshot placed in WAL, as a physical backup's own (pgbackrest_walscan)
            lsn, facts["recovery_target"] = self._logical_cut(first, pb, seg_size, lsn, snap, what)
            facts["target_lsn"] = lsn
        root = private_root(first.root.parent, first.run_as)
        sockdir = Path(tempfile.mkdtemp(prefix="bk-pgbr-"))
        chown_tree(sockdir, first.run_as)
        second = RestoredCluster(root=root, sockdir=sockdir, port=free_port(), bindir=first.bindir,
                                 run_as=first.run_as, pgbackrest=first.pgbackrest, stanza=first.stanza,
                                 what=what, repo_dir=first.repo, superuser=h.superuser,
                                 manifest_details=first.manifest_details)
        try:
            _, replay = self._recover(policy, second, pb["label"], lsn, None, what)
            h2 = PhysicalScratch(endpoint=Endpoint(second.params(h.superuser, scratch.info["database"])),
                                 bindir=second.bindir, workdir=h.workdir, globals_mode="skip", keep_owners=True,
                                 create_database=False, amcheck=False, restored=second, superuser=h.superuser)
            s2 = Scratch(kind="ephemeral", handle=h2, manifest=logical_manifest)
            fps = self._pg.fingerprints(scratch=s2, mode=mode, like=like)
            with connect(h2.endpoint, what=what) as conn:
                unlogged = set(unlogged_keys(conn))
            for key, entry in fps.items():
                kind = entry.get("kind")
                if kind == "sequence":
                    entry["not_compared"] = {"last_value": "a physical copy shows the WAL-logged position, the logical "
                                             "dump the value at its snapshot", "is_called": "as last_value"}
                elif kind == "materialized view":
                    entry["not_compared"] = {"rows": "the logical side hashes what the definition yields, the "
                                             "physical side the stored rows", "hash": "as rows"}
                elif key in unlogged:
                    entry["not_compared"] = {"rows": UNLOGGED_WHY, "hash": UNLOGGED_WHY}
            facts.update(stopped=second.recovery_stop(), replay_seconds=round(replay, 3))
        finally:
            facts["teardown"] = second.destroy()
        return fps, facts

    @staticmethod
    def _logical_cut(cluster: RestoredCluster, pb: dict, seg_size: int, lsn: str, snap: str,
                     what: str) -> tuple[str, str]:
        """Where replay must stop to hold exactly a logical backup's snapshot ``snap`` (txid_snapshot) read
        at WAL position ``lsn``: before the first commit record ahead of ``lsn`` that the snapshot does not
        see (pg_walcut.find_cut over the private repository's WAL), else ``lsn``. (target, why). A wrong
        target can only make the fingerprints differ, never make a wrong copy pass."""
        tool = PgBackrest(bin=cluster.pgbackrest, stanza=cluster.stanza, config=cluster.conf, run_as=cluster.run_as,
                          what=what)
        tli, first, at = scan_window(pb["wal_segments"][0], lsn, seg_size)
        segments = segments_between(segment_name(tli, first, seg_size), segment_name(tli, at, seg_size), seg_size)
        try:  # pg_waldump of the backup's major version, beside the pg_ctl the restore found
            commits, failed = read_commits(tool, cluster.bindir / "pg_waldump", segments, tli,
                                           lsn_text(first * seg_size), lsn)
        except (BackupkitError, OSError, ValueError, subprocess.SubprocessError) as e:
            commits, failed = [], " ".join(str(e).split())
        if failed:
            return lsn, f"the logical snapshot's WAL position {lsn} (the WAL could not be read to place it: {failed})"
        cut, why = find_cut(commits, Snapshot.parse(snap), lsn_int(lsn), set())
        if cut is None:
            return lsn, f"the logical snapshot's WAL position {lsn} ({why})"
        if cut < lsn_int(pb["lsn_stop"]):  # recovery cannot stop before the backup is consistent
            return lsn, f"the logical snapshot's WAL position {lsn} ({why}; but that is before the backup's end)"
        return (lsn if cut == lsn_int(lsn) else lsn_text(cut)), why

    # ---- checks ----------------------------------------------------------------------------------------

    def integrity_check(self, *, scratch: Scratch) -> list[CheckResult]:
        return self._checksums(scratch) + self._pg.integrity_check(scratch=scratch)

    def check_restored(self, *, scratch: Scratch, mode: str, like: dict | None = None, key: bytes | None = None
                       ) -> tuple[list[CheckResult], dict[str, dict[str, Any]]]:
        """pg_checksums on the stopped copy first (it needs the server down), then the logical engine's
        amcheck beside the fingerprints (``PostgresEngine.check_restored``), then sequences and UNLOGGED marks."""
        first = self._checksums(scratch)
        checks, out = self._pg.check_restored(scratch=scratch, mode=mode, like=like, key=key)
        self._physical_entries(scratch, out, like)
        return first + checks, out

    def _checksums(self, scratch: Scratch) -> list[CheckResult]:
        h: PhysicalScratch = scratch.handle
        cluster = h.restored
        out: list[CheckResult] = []
        if scratch.info.get("data_checksums"):
            t0 = time.monotonic()
            cluster.stop("fast")
            ok, text = cluster.checksums()
            cluster.start(120)
            scratch.info["postmaster_pid"] = cluster.pid
            data = {"seconds": round(time.monotonic() - t0, 3)}
            out.append(CheckResult("pg_checksums", "passed" if ok else "failed",
                                   f"pg_checksums --check on the stopped copy: {text}", data=data))
        else:
            out.append(CheckResult("pg_checksums", "waived", "the source cluster has no data checksums "
                                   "(initdb --data-checksums, or pg_checksums --enable while stopped)"))
        return out

    def fingerprints(self, *, scratch: Scratch, mode: str, like: dict | None = None) -> dict[str, dict[str, Any]]:
        out = self._pg.fingerprints(scratch=scratch, mode=mode, like=like)
        self._physical_entries(scratch, out, like)
        return out

    @staticmethod
    def _physical_entries(scratch: Scratch, out: dict, like: dict | None) -> None:
        """What a physical copy's fingerprints add to the logical engine's: sequence positions, UNLOGGED marks."""
        h: PhysicalScratch = scratch.handle
        with connect(h.endpoint, what=f"{scratch.kind} scratch") as conn:
            sequence_positions(conn, out, like)
            mark_unlogged(conn, out)

    def query_scalar(self, *, scratch: Scratch, sql: str) -> Any:
        return self._pg.query_scalar(scratch=scratch, sql=sql)

    @contextlib.contextmanager
    def restore_target(self, *, policy, dsn: str | None, replace_source: bool = False) -> Iterator[Scratch]:
        raise ConfigError(f"policy {policy.system}: 'backupkit restore --to' loads a logical dump; a physical "
                          "(pgBackRest) backup is restored with 'pgbackrest restore' (docs/pgbackrest.md)")
        yield  # pragma: no cover
