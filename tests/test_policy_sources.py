"""Each engine owns a typed ``source`` model, chosen by the policy's ``engine`` and validated at load:
a field of another engine, a bad or unknown option, a bad mode is one line naming the policy file and
``source.<field>`` (issue 12, item 2). No server is needed: nothing here connects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import ValidationError

from backupkit.engines import modes, source_model
from backupkit.engines.mariadb_config import MariadbOptions, MariadbSource
from backupkit.engines.oracle_source_config import OracleEngineSource
from backupkit.engines.postgres_config import PostgresOptions, PostgresSource
from backupkit.engines.sqlite_config import SqliteSource
from backupkit.errors import ConfigError
from backupkit.policy import Policy, load_policy

ROOT = Path(__file__).resolve().parent.parent
PG = {"dsn": "host=db1 dbname=his user=backup"}
MDB = {"dsn": "mariadb://backup@db1:3306/lis"}
ORA = {"dsn": "his-db:1521/HIS", "user": "BACKUPKIT", "password_file": "/etc/backupkit/his.pass",
       "oracle": {"schema": "HIS"}}
ORA_SCRATCH = {"scratch": {"type": "database", "dsn": "drill-db:1521/DRILL",
                           "password_file": "/etc/backupkit/drill.pass", "oracle": {"user": "SYSTEM"}}}
ORA_RMAN = {"oracle": {"mode": "rman", "schema": "HIS",
                       "ssh": {"host": "his-db", "key_file": "/etc/backupkit/ssh/his", "known_hosts": "/etc/backupkit/ssh/kh",
                               "oracle_home": "/u01/app/oracle/product/19.0.0/dbhome_1", "oracle_sid": "HIS"}}}


def _write(tmp_path: Path, engine, source, drill: dict | None = None) -> Path:
    data = {"system": "his", "tier": "6h", "engine": engine, "source": source}
    if drill is not None:
        data["drill"] = drill
    f = tmp_path / "his.yaml"
    f.write_text(yaml.safe_dump(data, allow_unicode=True))
    return f


def _load(tmp_path, engine, source, drill=None):
    return load_policy(_write(tmp_path, engine, source, drill))


def _error(tmp_path, engine, source, drill=None) -> str:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, engine, source, drill)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path / 'his.yaml'}: "), msg
    return msg.removeprefix(f"{tmp_path / 'his.yaml'}: ")


# ---- a field of another engine ------------------------------------------------------------------------


@pytest.mark.parametrize("engine, source, field, owner", [
    ("sqlite", {"path": "/srv/lis.db", "dsn": "host=db1"}, "dsn", "postgres"),
    ("sqlite", {"path": "/srv/lis.db", "options": {"x": 1}}, "options", "postgres"),
    ("sqlite", {"path": "/srv/lis.db", "mode": "dump"}, "mode", "mariadb"),
    ("postgres", {**PG, "socket": "/run/mysqld/mysqld.sock"}, "socket", "mariadb"),
    ("postgres", {**PG, "path": "/srv/his.db"}, "path", "sqlite"),
    ("postgres", {**PG, "oracle": {"schema": "HIS"}}, "oracle", "oracle"),
    ("mariadb", {**MDB, "path": "/srv/lis.db"}, "path", "sqlite"),
    ("mariadb", {**MDB, "pgbackrest": {"stanza": "main"}}, "pgbackrest", "postgres"),
    ("oracle", {**ORA, "host": "his-db"}, "host", "postgres"),
    ("oracle", {**ORA, "mode": "rman"}, "mode", "postgres"),
    ("oracle", {**ORA, "options": {}}, "options", "postgres"),
    ("oracle", {**ORA, "socket": "/tmp/x.sock"}, "socket", "mariadb"),
])
def test_a_field_of_another_engine_is_named_at_load(tmp_path, engine, source, field, owner):
    msg = _error(tmp_path, engine, source, ORA_SCRATCH if engine == "oracle" else None)
    assert msg.startswith(f"field 'source.{field}': is not used by engine {engine}"), msg
    assert re.search(rf"\(it is a field of engines? [^)]*\b{owner}\b", msg), msg  # says whose field it is
    assert f"engine {engine} reads " in msg, msg


@pytest.mark.parametrize("engine, source", [
    ("sqlite", {"path": "/srv/lis.db", "pth": "x"}),
    ("postgres", {**PG, "dns": "x"}),
    ("mariadb", {**MDB, "sockett": "/run/x"}),
    ("oracle", {**ORA, "passwd_file": "/x"}),
])
def test_a_misspelt_source_field_is_unknown(tmp_path, engine, source):
    msg = _error(tmp_path, engine, source, ORA_SCRATCH if engine == "oracle" else None)
    bad = next(k for k in source if k not in ("path", "dsn", "user", "password_file", "oracle"))
    assert msg.startswith(f"unknown field 'source.{bad}'; remove it or fix its spelling"), msg


def test_oracle_mode_and_host_say_where_they_belong(tmp_path):
    assert "source.oracle.mode" in _error(tmp_path, "oracle", {**ORA, "mode": "rman"}, ORA_SCRATCH)
    assert "dsn" in _error(tmp_path, "oracle", {**ORA, "port": 1521}, ORA_SCRATCH)


def test_required_engine_fields_are_named(tmp_path):
    assert _error(tmp_path, "sqlite", {}).startswith("field 'source.path': is required for engine sqlite")
    msg = _error(tmp_path, "oracle", {k: v for k, v in ORA.items() if k != "oracle"}, ORA_SCRATCH)
    assert msg.startswith("field 'source.oracle': is required for engine oracle") and "schema" in msg, msg


# ---- options: typed and checked at load ------------------------------------------------------------


@pytest.mark.parametrize("options, field, words", [
    ({"restore_jobs": 0}, "restore_jobs", "must be a whole number of pg_restore jobs >= 1"),
    ({"restore_jobs": "two"}, "restore_jobs", "must be a whole number of pg_restore jobs >= 1"),
    ({"restore_jobs": True}, "restore_jobs", "must be a whole number"),
    ({"restore_jobs": 1.5}, "restore_jobs", "must be a whole number"),
    ({"bin_dir": 15}, "bin_dir", "must be a directory path"),
    ({"bin_dir": ["/usr/lib/postgresql/16/bin"]}, "bin_dir", "must be a directory path"),
    ({"password": "s3cret"}, "password", "never in options; move it to password_file"),
    ({"sslmode": {"a": 1}}, "sslmode", "libpq parameter must be a single value"),
])
def test_postgres_option_types_are_checked_at_load(tmp_path, options, field, words):
    msg = _error(tmp_path, "postgres", {**PG, "options": options})
    assert msg.startswith(f"field 'source.options.{field}': ") and words in msg, msg
    assert "s3cret" not in msg


@pytest.mark.parametrize("source, field, words", [
    ({"options": {"lock_wait_timeout": 0}}, "lock_wait_timeout", "must be a whole number of seconds >= 1"),
    ({"options": {"lock_wait_timeout": "5"}}, "lock_wait_timeout", "must be a whole number of seconds >= 1"),
    ({"options": {"lock_wait_timeout": True}}, "lock_wait_timeout", "must be a whole number of seconds >= 1"),
    ({"options": {"fingerprint_sessions": 17}}, "fingerprint_sessions", "from 1 to 16"),
    ({"options": {"fingerprint_sessions": "2"}}, "fingerprint_sessions", "from 1 to 16"),
    ({"mode": "physical", "options": {"parallel": 0}}, "parallel", "copy threads from 1 to 64"),
    ({"mode": "physical", "options": {"parallel": 65}}, "parallel", "copy threads from 1 to 64"),
    ({"options": {"server_bin_dir": 3}}, "server_bin_dir", "must be a directory path"),
    ({"options": {"parallel": 4}}, "parallel", "is used only with mode: physical; remove it (this source has mode: dump)"),
    ({"mode": "physical", "options": {"lock_wait_timeout": 5}}, "lock_wait_timeout",
     "is used only with mode: dump; remove it (this source has mode: physical)"),
    ({"mode": "physical", "options": {"fingerprint_sessions": 2}}, "fingerprint_sessions", "only with mode: dump"),
])
def test_mariadb_option_types_and_modes_are_checked_at_load(tmp_path, source, field, words):
    msg = _error(tmp_path, "mariadb", {**MDB, **source})
    assert msg.startswith(f"field 'source.options.{field}': ") and words in msg, msg


def test_an_unknown_mariadb_option_lists_the_known_ones(tmp_path):
    msg = _error(tmp_path, "mariadb", {**MDB, "options": {"lock_wait": 3}})
    assert msg.startswith("field 'source.options.lock_wait': unknown MariaDB option; use "), msg
    assert "bin_dir, fingerprint_sessions, lock_wait_timeout, parallel, server_bin_dir" in msg, msg


def test_options_need_a_mapping(tmp_path):
    assert _error(tmp_path, "postgres", {**PG, "options": ["sslmode=require"]}).startswith("field 'source.options': ")
    assert _error(tmp_path, "mariadb", {**MDB, "options": "parallel=2"}).startswith("field 'source.options': ")


# ---- modes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine, source, words", [
    ("postgres", {**PG, "mode": "rman"}, "'rman' is not a mode of engine postgres; use one of logical, pgbackrest"),
    ("mariadb", {**MDB, "mode": "logical"}, "'logical' is not a mode of engine mariadb; use one of dump, physical"),
])
def test_a_mode_of_another_engine_is_named(tmp_path, engine, source, words):
    msg = _error(tmp_path, engine, source)
    assert msg == f"field 'source.mode': {words}", msg


def test_the_pgbackrest_block_goes_with_its_mode(tmp_path):
    msg = _error(tmp_path, "postgres", {**PG, "pgbackrest": {"stanza": "main"}})
    assert msg.startswith("field 'source.pgbackrest': the 'pgbackrest' block is used only with engine postgres and "
                          "mode: pgbackrest"), msg
    msg = _error(tmp_path, "postgres", {**PG, "mode": "pgbackrest"})
    assert msg.startswith("field 'source.pgbackrest': mode pgbackrest needs a 'pgbackrest' block"), msg
    assert _error(tmp_path, "postgres", {**PG, "mode": "pgbackrest", "pgbackrest": {"stanza": "a b"}}).startswith(
        "field 'source.pgbackrest.stanza': ")


def test_each_engine_model_declares_the_modes_the_registry_knows():
    assert set(get_args(get_args(PostgresSource.model_fields["mode"].annotation)[0])) == set(modes("postgres"))
    assert set(get_args(get_args(MariadbSource.model_fields["mode"].annotation)[0])) == set(modes("mariadb"))
    assert "mode" not in SqliteSource.model_fields and "mode" not in OracleEngineSource.model_fields


# ---- the engine picks the model --------------------------------------------------------------------


def test_an_unknown_engine_is_the_error_not_its_source(tmp_path):
    msg = _error(tmp_path, "db2", {"dsn": "db2://x"})
    assert msg == "field 'engine': unknown engine 'db2'; use one of sqlite, postgres, mariadb, oracle", msg
    data = {"system": "his", "tier": "6h", "source": {"path": "/x"}}
    (tmp_path / "his.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"required field 'engine' is missing"):
        load_policy(tmp_path / "his.yaml")


def test_source_errors_are_located_at_the_source_field_without_the_engine_tag():
    with pytest.raises(ValidationError) as e:
        Policy.model_validate({"system": "his", "tier": "6h", "engine": "postgres",
                               "source": {**PG, "options": {"restore_jobs": 0}}})
    assert e.value.errors()[0]["loc"] == ("source", "options", "restore_jobs")
    with pytest.raises(ValidationError) as e:
        Policy.model_validate({"system": "his", "tier": "6h", "engine": "mariadb", "source": {**MDB, "port": 0}})
    assert e.value.errors()[0]["loc"] == ("source", "port")


def test_the_policy_the_registry_and_the_source_models_know_the_same_engines():
    from backupkit import engines
    from backupkit.policy import ENGINES

    assert set(ENGINES) == set(engines._SOURCES) == set(engines._MODULES)


@pytest.mark.parametrize("engine, model", [("sqlite", SqliteSource), ("postgres", PostgresSource),
                                           ("mariadb", MariadbSource), ("oracle", OracleEngineSource)])
def test_the_registry_names_each_engines_model(engine, model):
    assert source_model(engine) is model and model.engine == engine
    assert model.model_config["extra"] == "forbid"
    assert all(m.__module__.endswith("_config") for m in (model,))


# ---- valid policies, every engine and mode -----------------------------------------------------------


@pytest.mark.parametrize("engine, source, drill, model, mode", [
    ("sqlite", {"path": "lis.sqlite"}, None, SqliteSource, None),
    ("postgres", {**PG, "port": 5433, "password_env": "HIS_PG",
                  "options": {"sslmode": "require", "connect_timeout": 5, "bin_dir": "/usr/lib/postgresql/16/bin",
                              "restore_jobs": 2}}, None, PostgresSource, "logical"),
    ("postgres", {**PG, "mode": "logical"}, None, PostgresSource, "logical"),
    ("postgres", {**PG, "mode": "pgbackrest", "pgbackrest": {"stanza": "main", "type": "incr"}}, None,
     PostgresSource, "pgbackrest"),
    ("mariadb", {**MDB, "options": {"lock_wait_timeout": 30, "fingerprint_sessions": 4, "bin_dir": "/opt/mariadb/bin"}},
     None, MariadbSource, "dump"),
    ("mariadb", {"socket": "/run/mysqld/mysqld.sock", "user": "backup", "database": "lis", "mode": "dump"}, None,
     MariadbSource, "dump"),
    ("mariadb", {**MDB, "mode": "physical", "options": {"parallel": 4, "server_bin_dir": "/usr/sbin"}}, None,
     MariadbSource, "physical"),
    ("oracle", ORA, ORA_SCRATCH, OracleEngineSource, "datapump"),
    ("oracle", ORA_RMAN, {"scratch": {"type": "database", "oracle": {"accept_validate_only": True}}},
     OracleEngineSource, "rman"),
])
def test_a_valid_policy_of_each_engine_and_mode_loads(tmp_path, engine, source, drill, model, mode):
    from backupkit.engines import mode_of

    p = _load(tmp_path, engine, source, drill)
    assert type(p.source) is model and p.engine == engine
    assert mode_of(engine, p.source) == mode
    if engine == "sqlite":
        assert p.source.path == tmp_path / "lis.sqlite"  # relative to the policy file, as before


def test_typed_options_keep_the_mapping_the_engines_read(tmp_path):
    p = _load(tmp_path, "postgres", {**PG, "options": {"sslmode": "require", "bin_dir": "/usr/lib/postgresql/16/bin",
                                                        "restore_jobs": 2}})
    opts = p.source.options
    assert isinstance(opts, PostgresOptions)
    assert opts.restore_jobs == 2 and opts.bin_dir == Path("/usr/lib/postgresql/16/bin")
    assert (opts or {}).get("bin_dir") == Path("/usr/lib/postgresql/16/bin") and opts.get("nope") is None
    assert dict(opts) == {"sslmode": "require", "bin_dir": Path("/usr/lib/postgresql/16/bin"), "restore_jobs": 2}
    assert "sslmode" in opts and opts["sslmode"] == "require" and len(opts) == 3
    empty = _load(tmp_path, "postgres", PG).source.options
    assert not empty and dict(empty) == {} and empty.restore_jobs is None and empty.get("bin_dir") is None

    m = _load(tmp_path, "mariadb", {**MDB, "options": {"fingerprint_sessions": 4}}).source.options
    assert isinstance(m, MariadbOptions) and dict(m) == {"fingerprint_sessions": 4} and m.lock_wait_timeout is None
    assert int(m.get("fingerprint_sessions")) == 4


def test_postgres_endpoint_takes_libpq_options_but_not_backupkits_own(tmp_path):
    pytest.importorskip("psycopg")
    from backupkit.engines.pg_conn import source_endpoint

    p = _load(tmp_path, "postgres", {**PG, "options": {"sslmode": "require", "connect_timeout": 5,
                                                        "bin_dir": "/x", "restore_jobs": 3}})
    ep = source_endpoint(p, with_password=False)
    assert ep.params["sslmode"] == "require" and ep.params["connect_timeout"] == "5"
    assert "bin_dir" not in ep.params and "restore_jobs" not in ep.params


def test_an_empty_bin_dir_still_means_none(tmp_path):
    opts = _load(tmp_path, "postgres", {**PG, "options": {"bin_dir": ""}}).source.options
    assert not opts.get("bin_dir")


# ---- what loads today still loads -------------------------------------------------------------------


def _documented_policies():
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)):
            data = yaml.safe_load(block)
            if isinstance(data, dict) and {"engine", "source"} <= set(data):
                yield pytest.param(doc.name, block, id=f"{doc.name}-{i}")


@pytest.mark.parametrize("doc, block", list(_documented_policies()))
def test_every_documented_policy_loads(tmp_path, doc, block):
    """Complete examples load as written; fragments (docs/mariadb.md, docs/pgbackrest.md) with a system and tier."""
    data = yaml.safe_load(block)
    f = tmp_path / "p.yaml"
    f.write_text(block if {"system", "tier"} <= set(data) else
                 yaml.safe_dump({"system": "his", "tier": "6h", **data}, allow_unicode=True))
    p = load_policy(f)
    assert type(p.source) is source_model(p.engine)


def test_the_example_policy_loads_with_its_libpq_options():
    p = load_policy(ROOT / "policies" / "example-lis-postgres.yaml")
    assert p.source.options.get("sslmode") == "verify-full" and p.source.options.restore_jobs is None


def test_a_field_of_another_engine_reads_as_none_for_code_that_describes_any_source(tmp_path):
    """evidence/paperwork.py describes every source by database, path and host: unset, not an error."""
    p = _load(tmp_path, "sqlite", {"path": "/srv/lis.db"})
    assert p.source.database is None and p.source.host is None and p.source.mode is None
    assert _load(tmp_path, "postgres", PG).source.path is None
    with pytest.raises(AttributeError):
        p.source.databse  # noqa: B018  (not a field of any engine)
