"""``backupkit init DIR``: a working configuration with fresh keys and an example policy."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..keys import generate_identity, generate_signing_key, write_private

CONFIG_NAME = "backupkit.yaml"


def example_policy(db_path: Path, targets: list[str]) -> dict:
    return {
        "system": "demo-lis",
        "title": "检验信息系统 LIS (demo)",
        "tier": "30m",
        "rpo": "24h",
        "engine": "sqlite",
        "source": {"path": str(db_path)},
        "backup": {"at": "02:00", "compression_level": 3},
        "retention": {"daily": 7, "weekly": 5, "monthly": 12, "yearly": 3},
        "targets": targets,
        "drill": {
            "every": "30d",
            "scratch": {"type": "ephemeral"},
            "fingerprint": "full",
            "assertions": [
                {"name": "patients present", "sql": "SELECT count(*) FROM patients", "expect": "> 0"},
                {"name": "newest encounter within RPO", "sql": "SELECT max(admitted) FROM encounters",
                 "expect": ">= backup_time - 1 day"},
            ],
        },
        "controls": ["mlps2-l3", "hipaa", "iso27001", "nist-cp", "cis-v8"],
    }


def _generic_assertions(engine: str) -> list[dict]:
    sql = ("SELECT count(*) FROM sqlite_master WHERE type = 'table'" if engine == "sqlite" else
           "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")
    return [{"name": "tables present", "sql": sql, "expect": "> 0"}]


def checked_source(engine: str | None, source_db: Path | None, dsn: str | None) -> tuple[dict | None, list[dict], str]:
    """Connect to the named source before anything is written: (policy source, assertions, default system id).
    ``(None, …)`` when no source was named (the example policy is written disabled)."""
    if engine is None:
        engine = "postgres" if dsn else "sqlite" if source_db else None
    if engine == "postgres":
        if not dsn:
            raise ConfigError("init --engine postgres needs --dsn (e.g. 'host=db1 dbname=his user=backupkit')")
        from ..engines.pg_conn import dsn_endpoint, connect  # psycopg is an extra: import only when asked

        what = f"init --dsn {dsn}"
        ep = dsn_endpoint(dsn, what=what)
        with connect(ep, what=what, pinned=False) as conn:
            conn.execute("SELECT 1").fetchone()
        name = str(ep.params.get("dbname") or "pg").lower().replace("_", "-")
        return {"dsn": dsn}, _generic_assertions("postgres"), name
    if engine == "sqlite" and source_db is not None:
        import contextlib
        import sqlite3

        path = source_db.absolute()
        if not path.is_file():
            raise ConfigError(f"init --source {path}: no such file; name the SQLite database to protect")
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            raise ConfigError(f"init --source {path}: not a SQLite database ({e})") from None
        demo = {"patients", "encounters"} <= tables
        return {"path": str(path)}, (None if demo else _generic_assertions("sqlite")), "demo-lis"
    if engine == "sqlite":
        raise ConfigError("init --engine sqlite needs --source FILE (the SQLite database to protect)")
    return None, [], "demo-lis"


def init(directory: Path, *, source_db: Path | None = None, offsite: Path | None = None, engine: str | None = None,
         dsn: str | None = None, system: str | None = None) -> Path:
    """Create the configuration (see init_with_policy); return the config path."""
    return init_with_policy(directory, source_db=source_db, offsite=offsite, engine=engine, dsn=dsn, system=system)[0]


def init_with_policy(directory: Path, *, source_db: Path | None = None, offsite: Path | None = None,
                     engine: str | None = None, dsn: str | None = None,
                     system: str | None = None) -> tuple[Path, Path, bool]:
    """Create DIR/{backupkit.yaml, keys/, policies/, repo/}; return (config path, policy path, policy enabled).

    With a source (``--source`` SQLite file or ``--dsn``) the policy is for it and the source is checked
    first; without one, the example policy is written disabled so ``backup --all`` skips it with a warning.
    Refuses to overwrite an existing configuration.
    """
    directory = directory.absolute()
    cfg = directory / CONFIG_NAME
    if cfg.exists():
        raise ConfigError(f"{cfg} already exists; choose an empty directory")
    source, assertions, default_system = checked_source(engine, source_db, dsn)
    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    os.chmod(keys, 0o700)
    ident, recipient = generate_identity()
    write_private(keys / "identity.txt", ident.encode())
    (keys / "recipient.txt").write_text(recipient + "\n")
    write_private(keys / "signing.pem", generate_signing_key())
    (directory / "policies").mkdir(exist_ok=True)
    targets = {}
    if offsite is not None:
        offsite.mkdir(parents=True, exist_ok=True)
        targets["offsite"] = {"type": "local", "path": str(offsite)}
    config = {
        "repository": "repo",
        "ledger": "ledger.db",
        "policies": "policies",
        "keys": {"recipients": ["keys/recipient.txt"], "identity": "keys/identity.txt",
                 "signing_key": "keys/signing.pem"},
        "targets": targets,
    }
    cfg.write_text("# backupkit global configuration (docs/operations.md)\n"
                   + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    policy = example_policy(directory / "lis.sqlite", list(targets))
    if source is not None:
        policy.update(engine="postgres" if "dsn" in source else "sqlite", source=source)
        if assertions is not None:
            policy["drill"]["assertions"] = assertions
        if "dsn" in source:
            policy["title"] = f"PostgreSQL {default_system}"
    else:
        policy["enabled"] = False
    policy["system"] = system or default_system
    path = directory / "policies" / f"{policy['system']}.yaml"
    path.write_text("# One protected system: docs/policy.md explains every field.\n"
                    + ("" if source is not None else
                       "# An example: set source.path (or engine: postgres and source.dsn), then enabled: true.\n")
                    + yaml.safe_dump(policy, sort_keys=False, allow_unicode=True))
    return cfg, path, source is not None
