"""Mode datapump with an SSH account: the dump file leaves the source host and reaches the scratch host over
SFTP (a real sshd) instead of BFILENAME/DBMS_LOB.READ and UTL_FILE.PUT_RAW chunks through SQL.

The DIRECTORY objects of the python-oracledb stand-in are real directories here (fixtures/oracle_fake.py
DiskDirectory), so its Data Pump writes the dump where sshd serves it and imports what SFTP uploaded.
"""

from __future__ import annotations

import hashlib

import pytest

from backupkit.artifact import DirectorySink
from backupkit.engines.oracle import OracleEngine
from backupkit.errors import ConfigError, JobFailed
from backupkit.policy import Policy
from backupkit.verdict import compare_fingerprints

from fixtures.oracle_fake import DiskDirectory, FakeCursor
from fixtures.postgres import open_source





@pytest.fixture
def hosts(oracle_servers, sshd, tmp_path):
    src, scr = oracle_servers
    src.add_table("HIS", "PATIENTS", [("ID", "NUMBER"), ("NAME", "VARCHAR2")], [(1, "王小明"), (2, "李四")])
    for server, name in ((src, "src-dpdump"), (scr, "drill-dpdump")):
        d = sshd.remote_dir(name)
        server.directories["DATA_PUMP_DIR"] = DiskDirectory(d)
        server.directory_paths["DATA_PUMP_DIR"] = str(d)
    return src, scr


@pytest.fixture
def engine(hosts) -> OracleEngine:
    src, scr = hosts
    by_dsn = {"his-db:1521/HIS": src, "drill-db:1521/DRILL": scr}
    e = OracleEngine()
    e.connect = lambda spec: by_dsn[spec.dsn].connect(spec)
    return e


def ssh_block(sshd, **over) -> dict:
    return {"host": sshd.host, "port": sshd.port, "user": sshd.user, "key_file": str(sshd.client_key),
            "known_hosts": str(sshd.known_hosts), "timeout": 10, **over}


def policy(sshd, secrets_dir, *, source_ssh: dict | None = None, scratch_ssh: dict | None = None) -> Policy:
    return Policy.model_validate({
        "system": "his", "tier": "30m", "engine": "oracle",
        "source": {"dsn": "his-db:1521/HIS", "user": "BACKUPKIT", "password_file": str(secrets_dir / "source.pass"),
                   "oracle": {"schema": "HIS", "poll_seconds": 1, **({"ssh": source_ssh} if source_ssh else {})}},
        "drill": {"fingerprint": "full", "scratch": {
            "type": "database", "dsn": "drill-db:1521/DRILL", "password_file": str(secrets_dir / "scratch.pass"),
            "oracle": {"user": "system", **({"ssh": scratch_ssh} if scratch_ssh else {})}}}})


def test_dump_and_drill_upload_over_sftp(engine, hosts, sshd, secrets_dir, dump_dir, age_keys, tmp_path,
                                        monkeypatch):
    src, scr = hosts
    pol = policy(sshd, secrets_dir, source_ssh=ssh_block(sshd), scratch_ssh=ssh_block(sshd))
    sink = DirectorySink(dump_dir(), age_keys.recipients)
    result = engine.dump(policy=pol, sink=sink)
    dp = result.details["datapump"]
    assert dp["transfer"] == f"sftp {sshd.user}@127.0.0.1:{sshd.port}"
    # the dump is not read through SQL (the small export log still is)
    assert {c.binds["file_name"] for c in src.sql("DBMS_LOB.READ")} == {f"{dp['job'][:9]}EXPORT.log"}
    [stream] = sink.streams
    assert stream.content_bytes == dp["dump_bytes"] > 70_000
    assert [c.binds for c in src.sql("FROM all_directories")] == [{"name": "DATA_PUMP_DIR"}]
    assert list(src.directories["DATA_PUMP_DIR"]) == []  # dump and log removed on the host

    with engine.scratch(policy=pol, workdir=tmp_path / "drill") as scratch:
        scratch.manifest = {"fingerprints": result.fingerprints, "details": result.details,
                            "consistency": result.consistency}
        uploaded = {}
        real_import = FakeCursor._finish_import

        def spy(cur, job):  # what the import read: the bytes SFTP wrote
            data = bytes(cur.server.directories["DATA_PUMP_DIR"][job.binds["dump_file"]])
            uploaded["sha"] = hashlib.sha256(data).hexdigest()
            return real_import(cur, job)

        monkeypatch.setattr(FakeCursor, "_finish_import", spy)
        engine.restore(policy=pol, scratch=scratch, source=open_source(sink, age_keys))
        actual = engine.fingerprints(scratch=scratch, mode="full", like=result.fingerprints)
        info = dict(scratch.info)
    assert uploaded["sha"] == stream.content_sha256
    assert not scr.sql("UTL_FILE.PUT_RAW")
    assert info["upload"]["transfer"].startswith("sftp ") and info["upload"]["bytes"] == dp["dump_bytes"]
    assert all(c["status"] == "passed" for c in compare_fingerprints(result.fingerprints, actual))
    assert list(scr.directories["DATA_PUMP_DIR"]) == []
    assert scratch.teardown_proof["files_after_teardown"] == []


def test_sftp_transfer_refuses_an_unknown_host_key_before_the_export(engine, hosts, sshd, secrets_dir, dump_dir,
                                                                     age_keys, tmp_path):
    src, _ = hosts
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    pol = policy(sshd, secrets_dir, source_ssh=ssh_block(sshd, known_hosts=str(empty)))
    with pytest.raises(ConfigError, match=r"the host key of 127\.0\.0\.1:\d+ is not in known_hosts"):
        engine.dump(policy=pol, sink=DirectorySink(dump_dir(), age_keys.recipients))
    assert src.calls == [] and src.connects == []  # nothing ran on the database


def test_ssh_host_that_is_not_the_directory_host_is_caught(engine, hosts, sshd, secrets_dir, dump_dir, age_keys,
                                                          tmp_path):
    src, _ = hosts
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    src.directory_paths["DATA_PUMP_DIR"] = str(elsewhere)  # the path exists in the database, not on that host
    pol = policy(sshd, secrets_dir, source_ssh=ssh_block(sshd))
    with pytest.raises(JobFailed, match=r"has None bytes but UTL_FILE.FGETATTR says \d+; is ssh.host the database "
                                        r"host of DIRECTORY DATA_PUMP_DIR\?"):
        engine.dump(policy=pol, sink=DirectorySink(dump_dir(), age_keys.recipients))
    assert list(src.directories["DATA_PUMP_DIR"]) == []
