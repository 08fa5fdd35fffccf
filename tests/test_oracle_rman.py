"""OracleEngine, ``mode: rman``: RMAN and SQL*Plus on the database host over a real sshd.

The database host is a real OpenSSH sshd (fixtures/sshd.py) whose ORACLE_HOME/bin holds the stand-in
``rman`` and ``sqlplus`` (fixtures/rman_standin/oracle_standin.py): they read the command file backupkit
uploads, write backup pieces and an RMAN-format log, answer the V$ queries, and fail on request. The
python-oracledb side (fingerprints of the source AS OF SCN and of the duplicated copy) is the recording
stand-in of fixtures/oracle_fake.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from backupkit.artifact import DirectorySink
from backupkit.engines import kit
from backupkit.engines.oracle import OracleEngine
from backupkit.engines.oracle_rman_script import first_error, parse_rman_log, parse_rows
from backupkit.errors import ConfigError, JobFailed
from backupkit.evidence.report import teardown_summary
from backupkit.policy import Policy, load_policy
from backupkit.verdict import compare_fingerprints

from fixtures.oracle_fake import PASSWORD, FakeServer, Table, ora
from fixtures.oracle_host import STANDIN, OracleHostStandin
from fixtures.postgres import open_source

COLUMNS = [("ID", "NUMBER"), ("NAME", "VARCHAR2")]
ROWS = [(1, "王小明"), (2, "李四")]




def policy(host, secrets_dir: Path, *, rman: dict | None = None, aux: str | None = None, ssh: dict | None = None,
           **drill) -> Policy:
    source = {"dsn": "his-db:1521/HIS", "user": "BACKUPKIT", "password_file": str(secrets_dir / "source.pass"),
              "oracle": {"schema": "HIS", "mode": "rman", "ssh": host.ssh_block(**(ssh or {})), "rman": rman or {}}}
    scratch: dict = {"type": "database", "oracle": {"accept_validate_only": True}}
    if aux:
        scratch = {"type": "database", "dsn": f"aux-db:1521/{aux}", "password_file": str(secrets_dir / "scratch.pass"),
                   "oracle": {"user": "SYSTEM", "aux_instance": aux}}
    return Policy.model_validate({"system": "his", "tier": "30m", "engine": "oracle", "source": source,
                                  "drill": {"fingerprint": "full", "scratch": scratch, **drill}})


@pytest.fixture(name="oracle_host")
def _oracle_host(sshd, tmp_path):
    """The database host: a real sshd, with the stand-in rman and sqlplus in ORACLE_HOME/bin."""
    root = tmp_path / "orahost"
    root.mkdir()
    os.chmod(root, 0o755)
    return OracleHostStandin(sshd, root)


@pytest.fixture
def src():
    s = FakeServer(dbid=1111, name="HISDB")
    s.add_table("HIS", "PATIENTS", COLUMNS, ROWS)
    return s


@pytest.fixture
def aux_db():
    return FakeServer(dbid=2222, name="AUX1")


@pytest.fixture
def engine(src, aux_db, oracle_host):
    """The python-oracledb seam: the source, and the auxiliary database as DUPLICATE left it on the host."""

    def connect(spec):
        if spec.dsn == "his-db:1521/HIS":
            return src.connect(spec)
        aux = oracle_host.state()["aux"].get("AUX1")
        if not aux or aux["state"] != "open":
            aux_db.connects.append(spec)
            raise ora("ORA-01034: ORACLE not available")
        if not aux_db.schemas:  # what DUPLICATE ... UNTIL SCN restored: the source as of the SCN before
            for schema, tables in src.schemas.items():
                aux_db.users.add(schema)
                aux_db.schemas[schema] = {t: Table(tab.columns, [(0, tab.rows_at(aux["until_scn"] - 1))])
                                          for t, tab in tables.items()}
        return aux_db.connect(spec)

    e = OracleEngine()
    e.connect = connect
    return e


def backup(engine, pol, dump_dir, age_keys):
    sink = DirectorySink(dump_dir(), age_keys.recipients)
    return engine.dump(policy=pol, sink=sink), sink


def run_drill(engine, pol, sink, result, age_keys, tmp_path, assertion: str | None = None):
    with engine.scratch(policy=pol, workdir=tmp_path / "drill") as scratch:
        scratch.manifest = {"fingerprints": result.fingerprints, "details": result.details,
                            "consistency": result.consistency}
        engine.restore(policy=pol, scratch=scratch, source=open_source(sink, age_keys))
        checks = engine.integrity_check(scratch=scratch)
        actual = engine.fingerprints(scratch=scratch, mode="full", like=result.fingerprints)
        value = engine.query_scalar(scratch=scratch, sql=assertion) if assertion else None
        info = dict(scratch.info)
    return scratch, checks, actual, info, value


def invocations(host, program: str | None = None) -> list[dict]:
    return [i for i in host.state()["invocations"] if program is None or i["program"] == program]


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- backup ---------------------------------------------------------------------------------------


def test_backup_runs_rman_over_ssh_and_streams_every_piece(engine, src, oracle_host, secrets_dir, dump_dir,
                                                            age_keys, caplog):
    pol = policy(oracle_host, secrets_dir, rman={"tag": "bk_his"}, aux="AUX1")
    with caplog.at_level(logging.DEBUG):
        result, sink = backup(engine, pol, dump_dir, age_keys)
    [rman] = invocations(oracle_host, "rman")
    d = result.details
    tag = d["tag"]
    assert tag.startswith("BK_HIS_") and len(tag) == len("BK_HIS_") + 12
    # OS authentication: rman target / with a command file and a log file in a private directory; no password
    argv = rman["argv"]
    assert argv[:3] == ["rman", "target", "/"] and argv[3].startswith(f"cmdfile={oracle_host.work}/backupkit-rman-")
    workdir = Path(argv[3].split("=", 1)[1]).parent
    assert argv[3:] == [f"cmdfile={workdir}/backup.rman", f"log={workdir}/backup.log"]
    assert rman["commands"] == (f"BACKUP AS COMPRESSED BACKUPSET DATABASE PLUS ARCHIVELOG TAG '{tag}';\n"
                                f"BACKUP CURRENT CONTROLFILE TAG '{tag}';\n")
    assert rman["env"]["ORACLE_SID"] == "HISDB" and rman["env"]["ORACLE_HOME"] == str(oracle_host.home)
    assert rman["env"]["PATH"].startswith(f"{oracle_host.home}/bin:")
    [sqlplus] = invocations(oracle_host, "sqlplus")
    assert sqlplus["argv"] == ["sqlplus", "-S", "-L", "/", "as", "sysdba"]
    assert "FROM v$rman_backup_job_details" in sqlplus["commands"] and f"tag = '{tag}'" in sqlplus["commands"]
    # the pieces V$BACKUP_PIECE_DETAILS lists (archived logs, datafiles, control file) became artifacts, byte for byte
    pieces = [p for p in oracle_host.state()["pieces"] if p["tag"] == tag]
    assert [p["kind"] for p in pieces] == ["annnn", "nnndf", "annnn", "ncnnf"]
    assert [p["handle"] for p in d["pieces"]] == [p["handle"] for p in pieces] == d["log_pieces"]
    assert [s.name for s in sink.streams] == ["piece-001", "piece-002", "piece-003", "piece-004"]
    for s, p in zip(sink.streams, pieces):
        assert s.content_sha256 == sha(p["handle"]) and s.content_bytes == p["bytes"]
    assert d["job"]["status"] == "COMPLETED" and d["job"]["input_type"] == "DB FULL" and d["dbid"] == 1111
    # the SCN: the last archived log's next_change#; fingerprints AS OF the SCN before it
    scn = max(r["next_change"] for r in oracle_host.state()["redolog"])
    assert result.consistency == {"kind": "oracle_rman", "scn": scn, "time": d["job"]["end_time"] + "+00:00",
                                  "dbid": 1111, "tag": tag, "schema": "HIS"}
    fp_calls = src.sql("SELECT COUNT(*)")
    assert fp_calls and all(c.binds == {"scn": scn - 1} for c in fp_calls)
    assert result.fingerprints["PATIENTS"]["rows"] == 2
    # nothing of backupkit's is left on the host; no secret anywhere
    assert not workdir.exists() and list(oracle_host.work.iterdir()) == []
    for inv in invocations(oracle_host):
        assert PASSWORD not in json.dumps(inv)
    assert PASSWORD not in caplog.text + json.dumps(d) + json.dumps(result.consistency)


def test_piece_format_directory_is_used(engine, oracle_host, secrets_dir, dump_dir, age_keys, tmp_path):
    pieces_dir = tmp_path / "rman-pieces"
    pieces_dir.mkdir()
    pol = policy(oracle_host, secrets_dir, rman={"format": str(pieces_dir)})
    result, sink = backup(engine, pol, dump_dir, age_keys)
    [rman] = invocations(oracle_host, "rman")
    assert f"PLUS ARCHIVELOG TAG '{result.details['tag']}' FORMAT '{pieces_dir}/%U';" in rman["commands"]
    assert all(Path(p["handle"]).parent == pieces_dir for p in result.details["pieces"])
    assert result.fingerprints == {}  # no auxiliary instance: the drill cannot compare fingerprints, none taken


def test_failing_rman_is_one_line_naming_the_host_and_nothing_is_recorded(engine, oracle_host, secrets_dir,
                                                                           dump_dir, age_keys):
    pol = policy(oracle_host, secrets_dir, aux="AUX1")
    oracle_host.fail("backup")
    sink = DirectorySink(dump_dir(), age_keys.recipients)
    with pytest.raises(JobFailed) as ei:
        engine.dump(policy=pol, sink=sink)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"policy his: Oracle RMAN: RMAN backup failed on {oracle_host.sshd.user}@127.0.0.1:"
                          f"{oracle_host.sshd.port}: RMAN-03009: failure of backup command on ORA_DISK_1 channel")
    assert "; ORA-19502: write error on file" in msg and "RMAN-00571" not in msg
    assert sink.streams == [] and list(oracle_host.work.iterdir()) == []
    assert not invocations(oracle_host, "sqlplus")  # nothing was picked up after the failure


def test_failed_job_in_v_dollar_is_refused(engine, oracle_host, secrets_dir, dump_dir, age_keys):
    """rman exiting 0 is not enough: the job's status in V$RMAN_BACKUP_JOB_DETAILS must be COMPLETED."""
    subprocess.run([str(oracle_host.home / "bin" / "rman"), "target", "/"], input="BACKUP DATABASE PLUS ARCHIVELOG "
                   "TAG 'NIGHTLY';\n", text=True, check=True, capture_output=True,
                   env={**os.environ, "ORACLE_HOME": str(oracle_host.home), "ORACLE_SID": "HISDB"})
    s = oracle_host.state()
    s["jobs"][-1]["status"] = "COMPLETED WITH ERRORS"
    oracle_host.write(s)
    pol = policy(oracle_host, secrets_dir, rman={"tag": "NIGHTLY", "adopt_existing": True})
    sink = DirectorySink(dump_dir(), age_keys.recipients)
    with pytest.raises(JobFailed, match=r"RMAN job 1 \(tag NIGHTLY\) ended COMPLETED WITH ERRORS .*nothing was recorded"):
        engine.dump(policy=pol, sink=sink)
    assert sink.streams == []


def test_adopting_the_dbas_nightly_job_runs_no_backup(engine, oracle_host, secrets_dir, dump_dir, age_keys):
    env = {**os.environ, "ORACLE_HOME": str(oracle_host.home), "ORACLE_SID": "HISDB"}
    for _ in range(2):  # two nights: only the latest job's pieces are picked up
        subprocess.run([str(oracle_host.home / "bin" / "rman"), "target", "/"], text=True, check=True, env=env,
                       input="BACKUP DATABASE PLUS ARCHIVELOG TAG 'NIGHTLY';\nBACKUP CURRENT CONTROLFILE TAG 'NIGHTLY';\n",
                       capture_output=True)
    pol = policy(oracle_host, secrets_dir, rman={"tag": "nightly", "adopt_existing": True})
    result, sink = backup(engine, pol, dump_dir, age_keys)
    assert len(invocations(oracle_host, "rman")) == 2  # the DBA's two runs; backupkit ran none
    latest = [p for p in oracle_host.state()["pieces"] if p["session_key"] == 2]
    assert [p["handle"] for p in result.details["pieces"]] == [p["handle"] for p in latest]
    assert result.details["adopted"] is True and result.details["tag"] == "NIGHTLY"
    assert [s.content_sha256 for s in sink.streams] == [sha(p["handle"]) for p in latest]
    # a nightly job that did not run: the latest one is too old
    oracle_host.update(job_age_seconds=3 * 86400)
    with pytest.raises(JobFailed, match=r"finished 72h ago .*the DBA's nightly job did not run"):
        engine.dump(policy=pol, sink=DirectorySink(dump_dir(), age_keys.recipients))
    # and a tag no job used
    pol = policy(oracle_host, secrets_dir, rman={"tag": "WEEKLY", "adopt_existing": True})
    with pytest.raises(JobFailed, match=r"no RMAN job wrote pieces with tag WEEKLY"):
        engine.dump(policy=pol, sink=DirectorySink(dump_dir(), age_keys.recipients))


def test_unknown_or_changed_host_key_is_refused_before_anything_runs(engine, oracle_host, secrets_dir, dump_dir,
                                                                    age_keys, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    pol = policy(oracle_host, secrets_dir, ssh={"known_hosts": str(empty)})
    with pytest.raises(ConfigError, match=r"the host key of 127\.0\.0\.1:\d+ is not in known_hosts .* "
                                          r"\(server offered ssh-ed25519 SHA256:.*nothing was sent"):
        engine.dump(policy=pol, sink=DirectorySink(dump_dir(), age_keys.recipients))
    pol = policy(oracle_host, secrets_dir)
    oracle_host.sshd.regenerate_host_key()
    with pytest.raises(ConfigError, match=r"HOST KEY CHANGED for 127\.0\.0\.1:\d+"):
        engine.dump(policy=pol, sink=DirectorySink(dump_dir(), age_keys.recipients))
    assert invocations(oracle_host) == [] and list(oracle_host.work.iterdir()) == []


def test_source_dsn_must_be_the_database_rman_backs_up(engine, src, oracle_host, secrets_dir, dump_dir, age_keys):
    src.dbid = 9999
    pol = policy(oracle_host, secrets_dir, aux="AUX1")
    with pytest.raises(JobFailed, match=r"source.dsn his-db:1521/HIS is DBID 9999 but RMAN on 127.0.0.1 backed up "
                                        r"DBID 1111"):
        engine.dump(policy=pol, sink=DirectorySink(dump_dir(), age_keys.recipients))


# ---- drill ----------------------------------------------------------------------------------------


def test_validate_only_drill_checks_the_uploaded_pieces_and_cleans_up(engine, oracle_host, secrets_dir, dump_dir,
                                                                      age_keys, tmp_path):
    pol = policy(oracle_host, secrets_dir)
    result, sink = backup(engine, pol, dump_dir, age_keys)
    n = len(invocations(oracle_host))
    scratch, checks, actual, info, _ = run_drill(engine, pol, sink, result, age_keys, tmp_path)
    assert [(c.name, c.status, c.proves_data) for c in checks] == [
        ("rman restore validate check logical", "passed", True), ("v$database_block_corruption", "passed", True),
        ("data compared", "waived", False)]  # the policy accepted validate-only: RMAN's checks decide
    assert actual == {} and result.fingerprints == {}  # validate only: nothing opened, nothing to compare
    stage = info["stage_dir"]
    assert info["drill"] == "validate only" and stage.startswith(f"{oracle_host.work}/backupkit-drill-")
    assert info["upload"]["pieces"] == 4 and info["upload"]["bytes"] == sum(p["bytes"] for p in result.details["pieces"])
    drill_calls = invocations(oracle_host)[n:]
    rman = [i for i in drill_calls if i["program"] == "rman"]
    assert [r["commands"] for r in rman] == [
        f"CATALOG START WITH '{stage}/pieces/' NOPROMPT;\nRESTORE DATABASE VALIDATE CHECK LOGICAL;\n",
        "".join(f"CHANGE BACKUPPIECE '{stage}/pieces/{Path(p['handle']).name}' UNCATALOG;\n" for p in result.details["pieces"]),
    ]
    assert all(r["argv"][:3] == ["rman", "target", "/"] and r["env"]["ORACLE_SID"] == "HISDB" for r in rman)
    # RMAN read the uploaded copies (the stand-in compares their bytes with the pieces it wrote)
    [datafile] = [p for p in result.details["pieces"] if p["type"] == "D" and "nnndf" in p["handle"]]
    assert oracle_host.state()["validated"] == [f"{stage}/pieces/{Path(datafile['handle']).name}"]
    assert any("v$database_block_corruption" in i["commands"] for i in drill_calls if i["program"] == "sqlplus")
    # teardown: uncataloged, directory removed, both proven
    assert scratch.teardown_proof == {"stage_dir": stage, "aux_instance": None, "pieces_cataloged_after_teardown": 0,
                                      "stage_exists_after_teardown": False, "stage_exists": False,
                                      "pieces_cataloged_exists": False}
    assert kit.proof_clean(scratch.teardown_proof) and teardown_summary(scratch.teardown_proof, "en")[1] is True
    assert oracle_host.state()["cataloged"] == [] and not Path(stage).exists()
    with pytest.raises(JobFailed, match="assertions need an opened copy"):
        with engine.scratch(policy=pol, workdir=tmp_path / "d2") as s2:
            engine.query_scalar(scratch=s2, sql="SELECT 1 FROM dual")


def test_validate_reads_the_artifact_bytes_and_a_failure_is_a_failed_check(engine, oracle_host, secrets_dir,
                                                                           dump_dir, age_keys, tmp_path):
    pol = policy(oracle_host, secrets_dir)
    result, sink = backup(engine, pol, dump_dir, age_keys)
    oracle_host.fail("validate")
    oracle_host.update(corruptions=["4|1234|1|CHECKSUM"])
    scratch, checks, *_ = run_drill(engine, pol, sink, result, age_keys, tmp_path)
    v, c, waived = checks
    assert v.status == "failed" and "\n" not in v.detail and v.proves_data and waived.status == "waived"
    assert v.detail.startswith(f"RMAN validate failed on {oracle_host.sshd.user}@127.0.0.1:{oracle_host.sshd.port}: "
                               "RMAN-03002: failure of restore command at ")
    assert (c.status, c.detail) == ("failed", "1 corrupt block range(s): 4|1234|1|CHECKSUM")
    assert scratch.teardown_proof["stage_exists_after_teardown"] is False


def test_duplicate_drill_opens_the_copy_fingerprints_asserts_and_drops_it(engine, src, aux_db, oracle_host,
                                                                         secrets_dir, dump_dir, age_keys, tmp_path):
    oracle_host.update(aux={"AUX1": {"state": "nomount"}})
    pol = policy(oracle_host, secrets_dir, aux="AUX1")
    result, sink = backup(engine, pol, dump_dir, age_keys)
    src.scn = 9_000_000
    src.write("HIS", "PATIENTS", ROWS + [(3, "after the backup")])  # not in the backup, not in its fingerprints
    aux_db.assertions["SELECT COUNT(*) FROM patients"] = 2
    n = len(invocations(oracle_host))
    scratch, checks, actual, info, value = run_drill(engine, pol, sink, result, age_keys, tmp_path,
                                                     assertion="SELECT COUNT(*) FROM patients")
    cmp = compare_fingerprints(result.fingerprints, actual)
    assert cmp and all(c["status"] == "passed" for c in cmp) and [c.status for c in checks] == ["passed", "passed"]
    assert value == 2
    scn = result.consistency["scn"]
    rman = [i for i in invocations(oracle_host)[n:] if i["program"] == "rman"]
    dup = rman[1]
    assert dup["argv"][:3] == ["rman", "auxiliary", "/"] and dup["env"]["ORACLE_SID"] == "AUX1"
    assert dup["commands"] == (f"DUPLICATE DATABASE TO AUX1 UNTIL SCN {scn} BACKUP LOCATION '{info['stage_dir']}/pieces' "
                               "NOFILENAMECHECK;\n")
    assert info["duplicate"]["dbid"] == 2222 and info["duplicate"]["until_scn"] == scn
    drop = rman[2]
    assert drop["env"]["ORACLE_SID"] == "AUX1" and drop["commands"].endswith("DROP DATABASE NOPROMPT;\n")
    st = oracle_host.state()
    assert st["aux"]["AUX1"]["state"] == "dropped" and "production_dropped" not in st
    assert scratch.teardown_proof == {"stage_dir": info["stage_dir"], "aux_instance": "AUX1",
                                      "aux_open_after_teardown": False, "pieces_cataloged_after_teardown": 0,
                                      "stage_exists_after_teardown": False, "stage_exists": False,
                                      "aux_open": False, "pieces_cataloged_exists": False}
    assert teardown_summary(scratch.teardown_proof, "en")[1] is True
    seq = [c.sql for c in aux_db.calls]
    i = seq.index('ALTER SESSION SET CURRENT_SCHEMA = "HIS"')
    assert seq[i + 1:i + 3] == ["SET TRANSACTION READ ONLY", "SELECT COUNT(*) FROM patients"]
    assert all(s.password == PASSWORD for s in aux_db.connects)
    for inv in invocations(oracle_host):
        assert PASSWORD not in json.dumps(inv)


def test_duplicate_catches_a_backup_that_restores_other_data(engine, src, aux_db, oracle_host, secrets_dir,
                                                            dump_dir, age_keys, tmp_path):
    oracle_host.update(aux={"AUX1": {"state": "nomount"}})
    pol = policy(oracle_host, secrets_dir, aux="AUX1")
    result, sink = backup(engine, pol, dump_dir, age_keys)
    aux_db.add_table("HIS", "PATIENTS", COLUMNS, ROWS[:1])  # the opened copy lost a row
    _, _, actual, _, _ = run_drill(engine, pol, sink, result, age_keys, tmp_path)
    [bad] = [c for c in compare_fingerprints(result.fingerprints, actual) if c["status"] == "failed"]
    assert "PATIENTS" in bad["name"] and "manifest rows=2" in bad["detail"] and "restored rows=1" in bad["detail"]


def test_aux_instance_that_is_the_source_sid_is_refused_before_anything(engine, oracle_host, secrets_dir, tmp_path):
    pol = policy(oracle_host, secrets_dir, aux="HISDB")
    with pytest.raises(ConfigError, match=r"aux_instance HISDB is the source instance"):
        with engine.scratch(policy=pol, workdir=tmp_path / "d"):
            pass
    assert invocations(oracle_host) == [] and list(oracle_host.work.iterdir()) == []


def test_failed_duplicate_still_drops_the_aux_and_cleans_up(engine, oracle_host, secrets_dir, dump_dir, age_keys,
                                                           tmp_path):
    oracle_host.update(aux={"AUX1": {"state": "nomount"}})
    pol = policy(oracle_host, secrets_dir, aux="AUX1")
    result, sink = backup(engine, pol, dump_dir, age_keys)
    oracle_host.fail("duplicate")
    with pytest.raises(JobFailed, match=r"RMAN duplicate failed on .*: RMAN-03002: failure of Duplicate Db command"):
        run_drill(engine, pol, sink, result, age_keys, tmp_path)
    st = oracle_host.state()
    assert st["cataloged"] == [] and list(oracle_host.work.iterdir()) == []
    assert [i["commands"] for i in st["invocations"] if i["program"] == "rman"][-2].endswith("DROP DATABASE NOPROMPT;\n")


# ---- log parsing, config -----------------------------------------------------------------------------

REAL_FAILURE_LOG = """
Recovery Manager: Release 19.0.0.0.0 - Production on Sat Nov 28 02:00:01 2026
Version 19.3.0.0.0

connected to target database: HISDB (DBID=1111)

RMAN> BACKUP DATABASE PLUS ARCHIVELOG TAG 'BK_HIS';

Starting backup at 28-NOV-2026 02:00:02
current log archived
channel ORA_DISK_1: starting piece 1 at 28-NOV-2026 02:00:03
channel ORA_DISK_1: finished piece 1 at 28-NOV-2026 02:00:04
piece handle=/u01/fra/HISDB/backupset/o1_mf_annnn_BK_HIS_ab12_.bkp tag=BK_HIS comment=NONE
RMAN-00571: ===========================================================
RMAN-00569: =============== ERROR MESSAGE STACK FOLLOWS ===============
RMAN-00571: ===========================================================
RMAN-03009: failure of backup command on ORA_DISK_1 channel at 11/28/2026 02:00:05
ORA-19502: write error on file "/u01/fra/x.bkp", block number 1024 (block size=8192)
ORA-27072: File I/O error

Recovery Manager complete.
"""


def test_rman_log_parsing():
    log = parse_rman_log(REAL_FAILURE_LOG)
    assert log.database == ("HISDB", 1111) and log.finished
    assert log.pieces == [("/u01/fra/HISDB/backupset/o1_mf_annnn_BK_HIS_ab12_.bkp", "BK_HIS")]
    assert [c for c, _ in log.errors] == ["RMAN-03009", "ORA-19502", "ORA-27072"]
    assert first_error(log) == ("RMAN-03009: failure of backup command on ORA_DISK_1 channel at 11/28/2026 02:00:05; "
                                'ORA-19502: write error on file "/u01/fra/x.bkp", block number 1024 (block size=8192)')
    assert first_error(parse_rman_log("Recovery Manager complete.")) is None
    rows = parse_rows("JOB|3|COMPLETED|DB FULL\n\nPIECE|/a b|10|D\nORA-01034: ORACLE not available\n")
    assert rows == {"JOB": [["3", "COMPLETED", "DB FULL"]], "PIECE": [["/a b", "10", "D"]],
                    "ERROR": [["ORA-01034: ORACLE not available"]]}


def write_policy(tmp_path: Path, oracle: dict, scratch: dict | None = None) -> Path:
    f = tmp_path / "his.yaml"
    f.write_text(yaml.safe_dump({"system": "his", "tier": "30m", "engine": "oracle",
                                 "source": {"oracle": {"schema": "HIS", "mode": "rman", **oracle}},
                                 "drill": {"scratch": scratch or {"type": "database",
                                                                  "oracle": {"accept_validate_only": True}}}}))
    return f


SSH = {"host": "his-db", "key_file": "/etc/backupkit/ssh/his_ed25519", "known_hosts": "/etc/backupkit/ssh/known_hosts",
       "oracle_home": "/u01/app/oracle/product/19.0.0/dbhome_1", "oracle_sid": "HISDB"}


@pytest.mark.parametrize("oracle, field, message", [
    ({}, "source.oracle.ssh", "mode rman needs source.oracle.ssh"),
    ({"ssh": {**SSH, "host": "his db"}}, "source.oracle.ssh.host", "is not a host name"),
    ({"ssh": {**SSH, "key_file": "keys/his"}}, "source.oracle.ssh.key_file", "is not an absolute path"),
    ({"ssh": {**SSH, "oracle_home": "/u01/$(reboot)"}}, "source.oracle.ssh.oracle_home", "not an absolute path on"),
    ({"ssh": {**SSH, "oracle_sid": "HIS;DB"}}, "source.oracle.ssh.oracle_sid", "is not an ORACLE_SID"),
    ({"ssh": {**SSH, "port": 0}}, "source.oracle.ssh.port", "greater than or equal to 1"),
    ({"ssh": SSH, "rman": {"adopt_existing": True}}, "source.oracle.rman.tag", "adopt_existing needs the tag"),
    ({"ssh": {k: v for k, v in SSH.items() if k != "oracle_sid"}}, "source.oracle.ssh.oracle_sid",
     "mode rman needs ssh.oracle_sid"),
    ({"ssh": SSH, "rman": {"tag": "NIGHTLY'; DROP"}}, "source.oracle.rman.tag", "is not an RMAN tag"),
    ({"ssh": SSH, "rman": {"tag": "N", "adopt_existing": True, "format": "/x"}}, "source.oracle.rman.format",
     "remove it with adopt_existing"),
])
def test_rman_config_errors_are_one_line_naming_the_field(tmp_path, oracle, field, message):
    f = write_policy(tmp_path, oracle)
    with pytest.raises(ConfigError) as ei:
        load_policy(f)
    assert str(ei.value).startswith(f"{f}: field '{field}': ") and message in str(ei.value)
    assert "\n" not in str(ei.value)


def test_rman_config_loads_and_aux_needs_a_connect_string(tmp_path):
    p = load_policy(write_policy(tmp_path, {"ssh": SSH, "rman": {"tag": "nightly", "adopt_existing": True}}))
    o = p.source.oracle
    assert (o.ssh.user, o.ssh.port, o.rman.tag, p.drill.scratch.oracle.validate_only) == ("oracle", 22, "NIGHTLY", True)
    f = write_policy(tmp_path, {"ssh": SSH}, scratch={"type": "database", "oracle": {"aux_instance": "AUX1"}})
    with pytest.raises(ConfigError, match=r"field 'drill.scratch.oracle.user': is required"):
        load_policy(f)
    f = write_policy(tmp_path, {"ssh": {**SSH}, "tag": "x"})
    with pytest.raises(ConfigError, match=r"unknown field 'source.oracle.tag'"):
        load_policy(f)
    f = tmp_path / "dp.yaml"
    f.write_text(yaml.safe_dump({"system": "his", "tier": "30m", "engine": "oracle", "source": {
        "dsn": "db:1521/HIS", "user": "B", "password_file": "/x", "oracle": {"schema": "HIS", "rman": {"tag": "T"}}},
        "drill": {"scratch": {"type": "database", "oracle": {}}}}))
    with pytest.raises(ConfigError, match=r"field 'source.oracle.rman': the rman block is used only with mode: rman"):
        load_policy(f)


def test_standin_is_the_one_installed(oracle_host):
    """Guard: the programs on the host are the stand-in (a real rman there would be a different test)."""
    assert str(STANDIN) in (oracle_host.home / "bin" / "rman").read_text()


# ---- end to end through the actions (manifest, offsite copy, drill record, RTO, verdict) --------------------


def test_backup_and_duplicate_drill_through_the_actions(workspace, engine, src, aux_db, oracle_host, secrets_dir,
                                                        monkeypatch):
    from backupkit.actions.backup import backup_one
    from backupkit.actions.drill import run_drill
    from backupkit.context import Context

    monkeypatch.setattr(OracleEngine, "connect", staticmethod(engine.connect))  # the actions make their own engine
    oracle_host.update(aux={"AUX1": {"state": "nomount"}})
    aux_db.assertions["SELECT COUNT(*) FROM patients"] = 2
    pol = policy(oracle_host, secrets_dir, aux="AUX1", assertions=[
        {"name": "patients present", "sql": "SELECT COUNT(*) FROM patients", "expect": "> 0"}])
    data = pol.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["targets"] = ["offsite"]
    workspace.policy_file("demo-lis").unlink()
    workspace.policy_file("his").write_text(yaml.safe_dump(data, allow_unicode=True))
    ctx = Context.load(workspace.config)
    try:
        out = backup_one(ctx, ctx.policy("his"))
        assert out.ok and out.copies_ok, (out.error, out.copy_errors)
        (bdir,) = workspace.backups("his")
        manifest = json.loads((bdir / "manifest.json").read_text())
        assert manifest["engine"] == "oracle" and manifest["consistency"]["kind"] == "oracle_rman"
        assert [s["name"] for s in manifest["streams"]][:4] == ["piece-001", "piece-002", "piece-003", "piece-004"]
        drill = run_drill(ctx, ctx.policy("his"), from_target="offsite")
    finally:
        ctx.close()
    rec = drill.record
    assert drill.exit_code == 0 and rec["verdict"] == "passed", rec.get("deviations")
    passed = {c["name"] for c in rec["checks"] if c["status"] == "passed"}
    assert {"rman restore validate check logical", "v$database_block_corruption", "fingerprint PATIENTS",
            "assertion patients present"} <= passed
    assert rec["rto"]["measured_seconds"] > 0 and rec["rto"]["met"] is True and rec["rto"]["target_seconds"] == 1800
    assert rec["scratch"]["duplicate"]["until_scn"] == manifest["consistency"]["scn"]
    assert rec["teardown"]["aux_open_after_teardown"] is False and rec["teardown"]["stage_exists_after_teardown"] is False
    assert PASSWORD not in json.dumps(rec) + json.dumps(manifest)


def test_accepted_validate_only_through_the_cli_passes_with_the_comparison_recorded_as_waived(
        workspace, oracle_host, secrets_dir):
    """No auxiliary instance, accepted by the policy: RMAN's block checks decide the verdict, and the record and
    the evidence say that no data was compared; a block RMAN finds corrupt fails the drill as a verification."""
    pol = policy(oracle_host, secrets_dir)
    data = pol.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["source"].pop("dsn"), data["source"].pop("user"), data["source"].pop("password_file")
    workspace.policy_file("demo-lis").unlink()
    workspace.policy_file("his").write_text(yaml.safe_dump(data, allow_unicode=True))
    workspace.ok("backup", "his", "--no-copy")
    r = workspace.run("drill", "his", "--json")
    rec = json.loads(r.out)
    assert rec["verdict"] == "passed" and r.code == 0, rec.get("deviations")
    assert rec["deviations"] == ["deviation (waived by policy): data compared: validate-only drill "
                                 "(drill.scratch.oracle.accept_validate_only): no copy was opened, so no table was "
                                 "compared with the backup's fingerprints"]
    assert {c["name"]: c["status"] for c in rec["checks"]} == {"rman restore validate check logical": "passed",
                                                               "v$database_block_corruption": "passed",
                                                               "data compared": "waived"}
    assert rec["rto"]["measured_seconds"] is not None and rec["teardown"]["stage_exists_after_teardown"] is False
    oracle_host.update(corruptions=["4|1234|1|CHECKSUM"])
    r = workspace.run("drill", "his", "--json")
    rec = json.loads(r.out)
    assert rec["verdict"] == "failed" and r.code == 3
    assert "check failed: v$database_block_corruption: 1 corrupt block range(s): 4|1234|1|CHECKSUM" in rec["deviations"]


def test_an_rman_drill_that_could_never_pass_is_refused_at_load(tmp_path):
    """Without an auxiliary instance the drill opens no copy: the policy must say it accepts RMAN's block checks
    alone, and the acceptance is refused where it means nothing."""
    f = write_policy(tmp_path, {"ssh": SSH}, scratch={"type": "database", "oracle": {}})
    with pytest.raises(ConfigError) as ei:
        load_policy(f)
    assert str(ei.value).startswith(f"{f}: field 'drill.scratch.oracle.aux_instance': is not set, so the drill can "
                                    "only run RESTORE VALIDATE, which opens no copy and compares no data; ")
    assert "accept_validate_only: true" in str(ei.value) and "\n" not in str(ei.value)
    f = write_policy(tmp_path, {"ssh": SSH}, scratch={
        "type": "database", "dsn": "aux-db:1521/AUX1", "password_file": "/etc/backupkit/aux.pass",
        "oracle": {"user": "SYSTEM", "aux_instance": "AUX1", "accept_validate_only": True}})
    with pytest.raises(ConfigError, match=r"field 'drill.scratch.oracle.accept_validate_only': applies only to mode "
                                          r"rman without aux_instance"):
        load_policy(f)
    f = tmp_path / "dp.yaml"
    f.write_text(yaml.safe_dump({"system": "his", "tier": "30m", "engine": "oracle", "source": {
        "dsn": "db:1521/HIS", "user": "B", "password_file": "/x", "oracle": {"schema": "HIS"}},
        "drill": {"scratch": {"type": "database", "dsn": "drill-db:1521/DRILL", "password_file": "/y",
                              "oracle": {"user": "SYSTEM", "accept_validate_only": True}}}}))
    with pytest.raises(ConfigError, match=r"field 'drill.scratch.oracle.accept_validate_only': applies only"):
        load_policy(f)


@pytest.mark.parametrize("doc_name", ["oracle.md", "policy.md"])
def test_the_documented_policies_load(tmp_path, doc_name):
    """docs/oracle.md's and docs/policy.md's two HIS examples are complete policies (tier 30m) that load as written."""
    import re as _re

    doc = (Path(__file__).parent.parent / "docs" / doc_name).read_text()
    blocks = [b for b in _re.findall(r"```yaml\n(.*?)```", doc, _re.S) if b.startswith("system: his") and "\nengine: oracle\n" in b]
    assert len(blocks) == 2
    modes = []
    for i, b in enumerate(blocks):
        f = tmp_path / f"his{i}.yaml"
        f.write_text(b)
        p = load_policy(f)
        assert p.tier_label == "30m"
        modes.append(p.source.oracle.mode)
    assert modes == ["datapump", "rman"]
    assert p.drill.scratch.oracle.aux_instance == "HISDRILL" and p.source.oracle.ssh.user == "oracle"


def test_an_aux_sid_that_reaches_the_source_database_is_never_dropped(engine, oracle_host, secrets_dir, dump_dir,
                                                                     age_keys, tmp_path):
    oracle_host.update(aux={"AUX1": {"state": "nomount"}})
    pol = policy(oracle_host, secrets_dir, aux="AUX1")
    result, sink = backup(engine, pol, dump_dir, age_keys)
    result.consistency["dbid"] = 2222  # what the stand-in's AUX1 reports: as if AUX1 were production
    with pytest.raises(ConfigError, match=r"drill.scratch.dsn aux-db:1521/AUX1 reaches DBID 2222, the source's"):
        run_drill(engine, pol, sink, result, age_keys, tmp_path)
    st = oracle_host.state()
    assert not any("DROP DATABASE" in i["commands"] for i in st["invocations"] if i["program"] == "rman")
    assert st["aux"]["AUX1"]["state"] == "open" and "production_dropped" not in st


@pytest.mark.parametrize("aux", [None, "AUX1"])
def test_what_a_killed_rman_drill_left_on_the_database_host_is_swept_by_cleanup(engine, oracle_host, secrets_dir,
                                                                                dump_dir, age_keys, tmp_path,
                                                                                monkeypatch, aux):
    """Killed after the upload (and, with an auxiliary instance, after DUPLICATE opened the copy): the stage
    directory, its cataloged pieces and the opened copy stay on the database host. ``drop_leftover_scratch``
    finds the stage by the name derived from the dead drill's work directory and removes all three."""
    from backupkit.engines.oracle_rman import Rman

    if aux:
        oracle_host.update(aux={"AUX1": {"state": "nomount"}})
    pol = policy(oracle_host, secrets_dir, aux=aux)
    result, sink = backup(engine, pol, dump_dir, age_keys)
    with monkeypatch.context() as m:  # as if SIGKILLed after restore(): no teardown ran
        m.setattr(Rman, "_teardown", lambda self, h: {})
        _, _, _, info, _ = run_drill(engine, pol, sink, result, age_keys, tmp_path)
    stage = info["stage_dir"]
    assert stage == f"{oracle_host.work}/backupkit-drill-{kit.scratch_tag(tmp_path / 'drill', 12)}"
    st = oracle_host.state()
    assert Path(stage).is_dir() and len(st["cataloged"]) == 4 and all(c.startswith(stage) for c in st["cataloged"])
    assert st["aux"].get("AUX1", {}).get("state") == ("open" if aux else None)
    proof = engine.drop_leftover_scratch(policy=pol, workdir=tmp_path / "drill")
    st = oracle_host.state()
    assert not Path(stage).exists() and st["cataloged"] == [] and "production_dropped" not in st
    assert proof["stage_exists"] is False and proof["pieces_cataloged_exists"] is False and "errors" not in proof
    if aux:
        assert st["aux"]["AUX1"]["state"] == "dropped" and proof["aux_open"] is False
    assert kit.proof_clean(proof) and teardown_summary(proof, "en")[1] is True
    # nothing left now: the next sweep only looks
    n = len(invocations(oracle_host, "rman"))
    again = engine.drop_leftover_scratch(policy=pol, workdir=tmp_path / "drill")
    assert again == {"stage_dir": stage, "aux_instance": aux, "stage_exists": False}
    assert len(invocations(oracle_host, "rman")) == n


def test_a_leftover_sweep_never_drops_an_aux_sid_that_reports_the_source_dbid(engine, oracle_host, secrets_dir,
                                                                               tmp_path):
    """The auxiliary SID reaches a database with the source's DBID (misconfigured, or it *is* production):
    the sweep drops nothing there."""
    oracle_host.update(aux={"AUX1": {"state": "open"}})
    st = oracle_host.state()
    st["db"]["dbid"] = 2222  # what the stand-in's AUX1 reports
    oracle_host.update(db=st["db"])
    pol = policy(oracle_host, secrets_dir, aux="AUX1")
    proof = engine.drop_leftover_scratch(policy=pol, workdir=tmp_path / "never-ran")
    st = oracle_host.state()
    assert st["aux"]["AUX1"]["state"] == "open" and not any(
        "DROP DATABASE" in i["commands"] for i in invocations(oracle_host, "rman"))
    assert proof["stage_exists"] is False
