"""Opt-in: OracleEngine against a real Oracle database (backup, drill into a second database, teardown).

This is the ONLY test in the suite allowed to skip, and only because Oracle cannot run on the CI machine:
when BACKUPKIT_TEST_ORACLE_DSN is not set it is reported as SKIPPED with the reason below, never as passed.
The same variable adds the engine contract suite's Oracle variant (``oracle-database`` in
tests/test_engine_contract.py, adapter OracleAdapter in tests/contract_support.py); without it those tests
do not exist on the run, so this skip is the one visible sign that Oracle was not proven against a server.
Everything else about the Oracle engine is proven against the recording stand-in (tests/test_oracle_engine.py,
tests/test_oracle_contract_adapter.py); docs/oracle.md lists what only a real database can prove and how to
run these tests (Oracle Database Free / XE in a container).

Environment:
  BACKUPKIT_TEST_ORACLE_DSN            source, e.g. localhost:1521/FREEPDB1
  BACKUPKIT_TEST_ORACLE_SCRATCH_DSN    a *different* database (another PDB), e.g. localhost:1521/DRILLPDB
  BACKUPKIT_TEST_ORACLE_USER           an account with the grants of docs/oracle.md on both (default SYSTEM)
  BACKUPKIT_TEST_ORACLE_PASSWORD_FILE  its password, mode 0600
  BACKUPKIT_TEST_ORACLE_SCHEMA         schema to back up (default BKTEST, created and filled by this test)
  BACKUPKIT_TEST_ORACLE_CLIENT_LIB_DIR Oracle Client 19c+ for thick mode (needed for 11.2)
"""

from __future__ import annotations

import os

import pytest

from backupkit.artifact import DirectorySink
from backupkit.engines.oracle import OracleEngine
from backupkit.policy import Policy
from backupkit.verdict import compare_fingerprints

from fixtures.postgres import open_source

DSN = os.environ.get("BACKUPKIT_TEST_ORACLE_DSN")

pytestmark = pytest.mark.skipif(
    not DSN, reason="opt-in real-Oracle tests: set BACKUPKIT_TEST_ORACLE_DSN (and the variables in this module's "
                    "docstring) to run this test and the engine contract suite's Oracle variant "
                    "(tests/test_engine_contract.py, oracle-database); Oracle NOT proven on this run")


def test_real_oracle_backup_and_drill(tmp_path, age_keys, dump_dir):
    env = os.environ
    schema = env.get("BACKUPKIT_TEST_ORACLE_SCHEMA", "BKTEST")
    client = {"client_lib_dir": env["BACKUPKIT_TEST_ORACLE_CLIENT_LIB_DIR"]} if env.get(
        "BACKUPKIT_TEST_ORACLE_CLIENT_LIB_DIR") else {}
    pw = env["BACKUPKIT_TEST_ORACLE_PASSWORD_FILE"]
    user = env.get("BACKUPKIT_TEST_ORACLE_USER", "SYSTEM")
    policy = Policy.model_validate({
        "system": "oracle-it", "tier": "30m", "engine": "oracle",
        "source": {"dsn": DSN, "user": user, "password_file": pw, "oracle": {"schema": schema, **client}},
        "drill": {"fingerprint": "full", "scratch": {
            "type": "database", "dsn": env["BACKUPKIT_TEST_ORACLE_SCRATCH_DSN"], "password_file": pw,
            "oracle": {"user": user, **client}}},
    })
    engine = OracleEngine()
    import oracledb

    from backupkit.engines.oracle_conn import source_spec

    spec = source_spec(policy)
    with engine.connect(spec) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM all_users WHERE username = :u", {"u": schema})
        if not cur.fetchone()[0]:
            cur.execute(f'CREATE USER "{schema}" IDENTIFIED BY "Bk_{os.urandom(6).hex()}" QUOTA UNLIMITED ON USERS')
        for stmt in (f'CREATE TABLE "{schema}".PATIENTS (ID NUMBER PRIMARY KEY, NAME VARCHAR2(60), '
                     "ADMITTED DATE, NOTE CLOB, PHOTO BLOB, AT TIMESTAMP WITH TIME ZONE)",
                     f'INSERT INTO "{schema}".PATIENTS VALUES (1, \'王小明\', DATE \'2026-01-01\', \'过敏\', '
                     "HEXTORAW('00FF'), TIMESTAMP '2026-01-01 08:00:00 +08:00')",
                     f'INSERT INTO "{schema}".PATIENTS (ID) VALUES (2)'):
            try:
                cur.execute(stmt)
            except oracledb.DatabaseError as e:
                if "ORA-00955" not in str(e) and "ORA-00001" not in str(e):
                    raise
        conn.commit()
    sink = DirectorySink(dump_dir(), age_keys.recipients)
    result = engine.dump(policy=policy, sink=sink)
    assert result.fingerprints["PATIENTS"]["rows"] >= 2
    with engine.scratch(policy=policy, workdir=tmp_path) as scratch:
        scratch.manifest = {"fingerprints": result.fingerprints, "details": result.details,
                            "consistency": result.consistency}
        engine.restore(policy=policy, scratch=scratch, source=open_source(sink, age_keys))
        actual = engine.fingerprints(scratch=scratch, mode="full", like=result.fingerprints)
    checks = compare_fingerprints(result.fingerprints, actual)
    assert checks and all(c["status"] == "passed" for c in checks), checks
    proof = scratch.teardown_proof
    assert proof["user_exists_after_teardown"] is False and not proof["files_after_teardown"]
