"""Pure decisions of the PostgreSQL engine: globals filtering, endpoint resolution and
sameness, fingerprint rendering, binary lookup errors. No server needed."""

from __future__ import annotations

import pytest

from backupkit.engines.pg_cluster import find_tool
from backupkit.engines.pg_conn import Endpoint, connect_reason, same_database_by_address, source_endpoint
from backupkit.engines.pg_fingerprint import render_hash
from backupkit.engines.pg_globals import filter_globals, psql_errors
from backupkit.errors import ConfigError
from fixtures.postgres import make_policy

GLOBALS = """\\restrict abc
SET default_transaction_read_only = off;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE backup;
ALTER ROLE backup WITH NOSUPERUSER LOGIN;
CREATE ROLE "His Reader";
ALTER ROLE "His Reader" WITH NOLOGIN;
COMMENT ON ROLE "His Reader" IS 'reads';
GRANT "His Reader" TO backup GRANTED BY postgres;
CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/pg/fast';
GRANT ALL ON TABLESPACE fast TO backup;
\\unrestrict abc
"""


@pytest.mark.parametrize(
    "existing, kept_roles, skipped_roles",
    [
        ({"postgres"}, ["backup", '"His Reader"'], ["postgres"]),
        ({"postgres", "backup", "His Reader"}, [], ["postgres", "backup", '"His Reader"']),
        (set(), ["postgres", "backup", '"His Reader"'], []),
    ],
)
def test_filter_globals_keeps_missing_roles_only_and_never_tablespaces(existing, kept_roles, skipped_roles):
    out, skipped = filter_globals(GLOBALS, existing)
    assert "TABLESPACE" not in out
    for r in kept_roles:
        assert f"CREATE ROLE {r};" in out and f"ALTER ROLE {r} WITH" in out
    for r in skipped_roles:
        assert f"CREATE ROLE {r};" not in out and f"ALTER ROLE {r} WITH" not in out
    assert 'GRANT "His Reader" TO backup' in out  # memberships are replayed; "already a member" is tolerated
    assert "\\restrict abc" in out and "\\unrestrict abc" in out
    assert len(skipped) == 2 + 2 * len(skipped_roles) + ('"His Reader"' in skipped_roles)


def test_psql_errors_tolerates_existing_objects_only():
    fatal, tolerated = psql_errors(
        'psql:<stdin>:3: ERROR:  role "postgres" already exists\n'
        'psql:<stdin>:9: ERROR:  role "x" is already a member of role "y"\n'
        'psql:<stdin>:12: ERROR:  permission denied to create role\n'
    )
    assert fatal == ["permission denied to create role"]
    assert len(tolerated) == 2


@pytest.mark.parametrize(
    "source, expected",
    [
        ({"dsn": "postgresql://backup@db1:5433/his"}, {"host": "db1", "port": "5433", "user": "backup", "dbname": "his"}),
        ({"dsn": "host=db1 dbname=his user=backup", "port": 6432, "database": "his2"},
         {"host": "db1", "port": "6432", "user": "backup", "dbname": "his2"}),
        ({"host": "10.0.0.5", "user": "u", "database": "lis", "options": {"sslmode": "require", "bin_dir": "/x"}},
         {"host": "10.0.0.5", "user": "u", "dbname": "lis", "sslmode": "require"}),
    ],
)
def test_source_endpoint_merges_dsn_fields_and_options(source, expected):
    ep = source_endpoint(make_policy(source=source), with_password=False)
    for k, v in expected.items():
        assert ep.params[k] == v
    assert "bin_dir" not in ep.params and "password" not in ep.params


@pytest.mark.parametrize(
    "a, b, same",
    [
        ({"host": "127.0.0.1", "port": "5432", "dbname": "his"}, {"host": "localhost", "port": "5432", "dbname": "his"}, True),
        ({"host": "127.0.0.1", "port": "5432", "dbname": "his"}, {"host": "/var/run/postgresql", "port": "5432", "dbname": "his"}, True),
        ({"host": "127.0.0.1", "port": "5432", "dbname": "his"}, {"host": "127.0.0.1", "port": "5432", "dbname": "postgres"}, False),
        ({"host": "127.0.0.1", "port": "5432", "dbname": "his"}, {"host": "127.0.0.1", "port": "5433", "dbname": "his"}, False),
        ({"host": "192.0.2.10", "port": "5432", "dbname": "his"}, {"host": "192.0.2.11", "port": "5432", "dbname": "his"}, False),
    ],
)
def test_same_database_by_address(a, b, same):
    assert same_database_by_address(Endpoint(a), Endpoint(b)) is same


def test_render_hash_is_sum_modulo_2_64():
    assert render_hash(0, 0) == "0" * 32
    assert render_hash(0) == "0" * 16 and render_hash(-1) == "f" * 16  # format 3 tables: one sum
    assert render_hash(-1, 1) == "f" * 16 + "0" * 15 + "1"
    assert render_hash(1 << 64, 5) == render_hash(0, 5)


def test_connect_reason_strips_libpq_noise():
    e = Exception('connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "x" does not exist\n')
    assert connect_reason(e) == 'database "x" does not exist'


def test_missing_pg_dump_major_names_the_package():
    with pytest.raises(ConfigError, match="install postgresql-client-99"):
        find_tool("pg_dump", 99)
