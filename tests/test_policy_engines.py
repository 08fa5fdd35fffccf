"""Engine-owned policy rules checked at load: modes, capabilities (scratch types), and the
source fields each engine reads. Each bad policy is one line naming the file and the field."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from backupkit.engines import capabilities, engine_for, get_engine, mode_of
from backupkit.errors import ConfigError
from backupkit.policy import load_policy

PG = {"dsn": "host=db1 dbname=his user=backup"}


def _load(tmp_path, engine: str, source: dict, drill: dict | None = None):
    data = {"system": "his", "tier": "6h", "engine": engine, "source": source}
    if drill is not None:
        data["drill"] = drill
    f = tmp_path / "his.yaml"
    f.write_text(yaml.safe_dump(data))
    return load_policy(f)


@pytest.mark.parametrize("engine, source, drill, field, words", [
    ("sqlite", {"path": "/srv/lis.db"}, {"scratch": {"type": "database", "dsn": "x"}}, "drill.scratch.type",
     "engine sqlite drills into a scratch of type ephemeral, not 'database'"),
    ("postgres", {**PG, "mode": "pgbackrest", "pgbackrest": {"stanza": "main"}},
     {"scratch": {"type": "database", "dsn": "host=scratch"}}, "drill.scratch.type",
     "engine postgres in mode pgbackrest drills into a scratch of type ephemeral"),
    ("mariadb", {"dsn": "mariadb://backup@db1/lis", "mode": "physical"},
     {"scratch": {"type": "database", "dsn": "mariadb://root@scratch/"}}, "drill.scratch.type",
     "engine mariadb in mode physical drills into a scratch of type ephemeral"),
    ("postgres", {**PG, "mode": "rman"}, None, "source.mode", "'rman' is not a mode of engine postgres; use one of logical, pgbackrest"),
    ("sqlite", {"path": "/srv/lis.db", "mode": "dump"}, None, "source.mode", "is not used by engine sqlite"),
    ("postgres", {**PG, "pgbackrest": {"stanza": "main"}}, None, "source.pgbackrest",
     "the 'pgbackrest' block is used only with engine postgres and mode: pgbackrest"),
    ("postgres", {**PG, "mode": "pgbackrest"}, None, "source.pgbackrest", "mode pgbackrest needs a 'pgbackrest' block"),
    ("postgres", {**PG, "socket": "/run/mysqld/mysqld.sock"}, None, "source.socket", "is not used by engine postgres"),
    ("postgres", {**PG, "path": "/srv/his.db"}, None, "source.path", "is not used by engine postgres"),
    ("sqlite", {"dsn": "host=db1"}, None, "source.dsn", "is not used by engine sqlite"),
    ("sqlite", {}, None, "source.path", "is required for engine sqlite"),
    ("oracle", {"dsn": "his-db:1521/HIS", "password_file": "/etc/backupkit/his.pass", "oracle": {"schema": "HIS"}},
     {"scratch": {"type": "database", "dsn": "drill-db:1521/DRILL", "oracle": {}}}, "drill.scratch.oracle.user",
     "is required: the drill connects to the scratch database as this admin user (to import the dump"),
    ("oracle", {"dsn": "his-db:1521/HIS", "password_file": "/etc/backupkit/his.pass", "oracle": {"schema": "HIS"}},
     None, "drill.scratch.type", "engine oracle in mode datapump drills into a scratch of type database"),
])
def test_what_an_engine_cannot_do_is_refused_at_load(tmp_path, engine, source, drill, field, words):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, engine, source, drill)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'his.yaml'}: field {field!r}: ") and words in msg, msg
    assert "\n" not in msg


def test_defaults_and_declared_modes(tmp_path):
    p = _load(tmp_path, "postgres", PG)
    assert mode_of(p.engine, p.source) == "logical"
    assert capabilities(p.engine, p.source).scratch == ("ephemeral", "database")
    assert capabilities(p.engine, p.source).restore_to is True
    p = _load(tmp_path, "mariadb", {"dsn": "mariadb://backup@db1/lis"})
    assert mode_of(p.engine, p.source) == "dump"
    p = _load(tmp_path, "sqlite", {"path": "/srv/lis.db"})
    assert mode_of(p.engine, p.source) is None and capabilities(p.engine, p.source).scratch == ("ephemeral",)
    assert type(engine_for(p)).__name__ == "SqliteEngine"


def test_an_unknown_mode_asked_of_the_registry_is_a_config_error():
    with pytest.raises(ConfigError, match="engine postgres has no mode 'tape'; use one of logical, pgbackrest"):
        get_engine("postgres", "tape")
    with pytest.raises(ConfigError, match="unknown engine 'db2'"):
        get_engine("db2")


def test_a_password_read_from_the_environment_never_reaches_a_child(monkeypatch):
    """password_env: the variable is in backupkit's environment; no dump or restore program inherits it."""
    from backupkit.engines import kit

    monkeypatch.setenv("HIS_DB_SECRET_T1", "s3cret-from-env")
    monkeypatch.setenv("PGPASSWORD", "libpq-would-use-this")
    assert kit.read_secret(password_file=None, password_env="HIS_DB_SECRET_T1", what="policy his: source") == "s3cret-from-env"
    env = kit.child_env()
    assert "HIS_DB_SECRET_T1" not in env and "PGPASSWORD" not in env and env.get("PATH")
    child = kit.Child(["sleep", "5"], what="policy his", tool="sleep").start()
    try:
        deadline = time.monotonic() + 5
        while not (environ := Path(f"/proc/{child.pid}/environ").read_bytes()) and time.monotonic() < deadline:
            time.sleep(0.05)  # under load the freshly exec'd image may not be readable yet
    finally:
        child.kill()
        child.close()
    assert b"s3cret-from-env" not in environ and b"libpq-would-use-this" not in environ
    assert b"PATH=" in environ
