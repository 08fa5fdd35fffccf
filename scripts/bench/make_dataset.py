#!/usr/bin/env python3
"""Build the hospital-shaped benchmark data set (docs: BENCHMARKS.md).

Given ``--scale S``, create database ``bench_his`` (PostgreSQL) or a SQLite file
with four tables (patients, encounters, orders, lab_results), their indexes and
foreign keys. PostgreSQL scale 1 is about 1 GB on disk. Rows are generated
deterministically in SQL (generate_series / recursive CTE), so a rebuild gives
the same data.

    python scripts/bench/make_dataset.py --scale 1
    python scripts/bench/make_dataset.py --engine sqlite --scale 0.1 --path /tmp/bench_his.sqlite
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
DATABASE = "bench_his"

# Rows per unit of scale; tuned so scale 1 is about 1 GB on disk with indexes.
ROWS = {"patients": 300_000, "encounters": 1_200_000, "orders": 2_400_000, "lab_results": 3_600_000}

WARDS = "(ARRAY['内科','外科','儿科','妇产科','急诊','ICU','骨科','神经内科','心内科','肿瘤科'])"
TESTS = "(ARRAY['GLU','HGB','WBC','PLT','ALT','AST','CREA','UREA','K','NA','CL','CRP','TSH','HBA1C'])"
UNITS = "(ARRAY['mmol/L','g/L','10^9/L','U/L','umol/L','mg/L','mIU/L','%'])"
STATUS = "(ARRAY['ordered','verified','dispensed','completed','cancelled'])"
DRUGS = "(ARRAY['阿莫西林 0.5g','头孢呋辛 0.25g','布洛芬 0.2g','二甲双胍 0.5g','氨氯地平 5mg','阿托伐他汀 20mg','奥美拉唑 20mg','生理盐水 500ml'])"

PG_SCHEMA = """
CREATE TABLE patients (
    id          bigint PRIMARY KEY,
    mrn         text NOT NULL UNIQUE,
    name        text NOT NULL,
    sex         char(1) NOT NULL,
    birth_date  date NOT NULL,
    phone       text,
    address     text,
    allergies   text,
    created_at  timestamptz NOT NULL
);
CREATE TABLE encounters (
    id              bigint PRIMARY KEY,
    patient_id      bigint NOT NULL REFERENCES patients(id),
    admitted        timestamptz NOT NULL,
    discharged      timestamptz,
    ward            text NOT NULL,
    diagnosis_code  text NOT NULL,
    notes           text
);
CREATE TABLE orders (
    id            bigint PRIMARY KEY,
    encounter_id  bigint NOT NULL,
    ordered_at    timestamptz NOT NULL,
    item          text NOT NULL,
    quantity      numeric(10,2) NOT NULL,
    status        text NOT NULL,
    prescriber    text
);
CREATE TABLE lab_results (
    id           bigint PRIMARY KEY,
    order_id     bigint NOT NULL,
    test_code    text NOT NULL,
    value_num    numeric(12,4),
    value_text   text,
    unit         text,
    ref_low      numeric(12,4),
    ref_high     numeric(12,4),
    flag         char(1),
    resulted_at  timestamptz NOT NULL,
    comment      text
);
"""

PG_FILL = """
SELECT setseed(0.42);
INSERT INTO patients
SELECT g,
       'MRN' || lpad(g::text, 10, '0'),
       (ARRAY['王','李','张','刘','陈','杨','黄','赵','吴','周'])[1 + g % 10] || (ARRAY['伟','芳','娜','敏','静','强','磊','洋','艳','勇'])[1 + (g / 10) % 10] || ' ' || substr(md5(g::text), 1, 6),
       CASE WHEN g % 2 = 0 THEN 'F' ELSE 'M' END,
       date '1930-01-01' + (g::bigint * 7919 % 32000)::int,
       CASE WHEN g % 3 = 0 THEN NULL ELSE '1' || lpad((g::bigint * 104729 % 10000000000)::text, 10, '0') END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE '北京市海淀区' || (g % 300) || '号院 ' || (g % 17) || '单元' END,
       CASE WHEN g % 7 = 0 THEN 'penicillin; ' || substr(md5(g::text || 'a'), 1, 12) ELSE NULL END,
       timestamptz '2015-01-01 00:00:00+00' + make_interval(secs => g::bigint * 997 % 300000000)
FROM generate_series(1, {patients}) g;

INSERT INTO encounters
SELECT g,
       1 + (g::bigint * 7 % {patients}),
       timestamptz '2018-01-01 00:00:00+00' + make_interval(secs => g::bigint * 131 % 200000000),
       CASE WHEN g % 4 = 0 THEN NULL ELSE timestamptz '2018-01-01 00:00:00+00' + make_interval(secs => g::bigint * 131 % 200000000 + 86400 * (1 + g % 20)) END,
       {wards}[1 + g % 10],
       chr((65 + g % 26)::int) || lpad((g % 100)::text, 2, '0') || '.' || (g % 10),
       CASE WHEN g % 3 = 0 THEN '主诉: ' || repeat('发热咳嗽 ', 1 + g % 4) || substr(md5(g::text), 1, 20) ELSE NULL END
FROM generate_series(1, {encounters}) g;

INSERT INTO orders
SELECT g,
       1 + (g::bigint * 13 % {encounters}),
       timestamptz '2018-01-01 00:00:00+00' + make_interval(secs => g::bigint * 67 % 200000000),
       {drugs}[1 + g % 8],
       round((1 + (g % 300) / 7.0)::numeric, 2),
       {status}[1 + g % 5],
       CASE WHEN g % 6 = 0 THEN NULL ELSE 'DR' || lpad((g % 500)::text, 4, '0') END
FROM generate_series(1, {orders}) g;

INSERT INTO lab_results
SELECT g,
       1 + (g::bigint * 17 % {orders}),
       {tests}[1 + g % 14],
       CASE WHEN g % 9 = 0 THEN NULL ELSE round((random() * 200)::numeric, 4) END,
       CASE WHEN g % 9 = 0 THEN (ARRAY['阴性','阳性','弱阳性','见备注'])[1 + g % 4] ELSE NULL END,
       CASE WHEN g % 9 = 0 THEN NULL ELSE {units}[1 + g % 8] END,
       round((g % 50)::numeric / 10, 4),
       CASE WHEN g % 2 = 0 THEN NULL ELSE round((50 + g % 150)::numeric / 3, 4) END,
       CASE WHEN g % 11 = 0 THEN 'H' WHEN g % 13 = 0 THEN 'L' ELSE NULL END,
       timestamptz '2018-01-01 00:00:00+00' + make_interval(secs => g::bigint * 53 % 200000000),
       CASE WHEN g % 10 = 0 THEN '复查 ' || substr(md5(g::text), 1, 16) ELSE NULL END
FROM generate_series(1, {lab_results}) g;
"""

PG_INDEXES = """
CREATE INDEX encounters_patient_idx ON encounters (patient_id);
CREATE INDEX encounters_admitted_idx ON encounters (admitted);
CREATE INDEX orders_encounter_idx ON orders (encounter_id);
CREATE INDEX lab_results_order_idx ON lab_results (order_id);
ALTER TABLE orders ADD CONSTRAINT orders_encounter_fk FOREIGN KEY (encounter_id) REFERENCES encounters(id);
VACUUM ANALYZE;
"""


def rows_for(scale: float) -> dict[str, int]:
    """Given a scale factor, return the row count of every table (at least 10 each)."""
    return {t: max(10, int(n * scale)) for t, n in ROWS.items()}


def pg_database_size(dsn: str) -> int | None:
    """Return the size in bytes of bench_his, or None when it does not exist."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_database_size(datname) FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        return row[0] if row else None


def pg_marker(dsn: str) -> float | None:
    """Return the scale recorded in bench_his (COMMENT ON DATABASE), or None."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
    if not row or not row[0] or not row[0].startswith("backupkit bench scale "):
        return None
    return float(row[0].rsplit(" ", 1)[1])


def build_postgres(scale: float, dsn: str = DEFAULT_DSN) -> int:
    """Given a scale, (re)create database bench_his via ``dsn`` and return its size in bytes."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE} TEMPLATE template0 ENCODING 'UTF8'")
    target = make_conninfo(**{**conninfo_to_dict(dsn), "dbname": DATABASE})
    n = rows_for(scale)
    fill = PG_FILL.format(wards=WARDS, tests=TESTS, units=UNITS, status=STATUS, drugs=DRUGS, **n)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(PG_SCHEMA)
        for stmt in (s.strip() for s in fill.split(";\n")):
            if stmt:
                conn.execute(stmt)
        for stmt in (s.strip() for s in PG_INDEXES.split(";\n")):
            if stmt:
                conn.execute(stmt.rstrip(";"))
        conn.execute(f"COMMENT ON DATABASE {DATABASE} IS 'backupkit bench scale {scale:g}'")
    return pg_database_size(dsn) or 0


# ---- SQLite: the same schema, smaller scales ----------------------------------

SQLITE_SCHEMA = """
CREATE TABLE patients (id INTEGER PRIMARY KEY, mrn TEXT NOT NULL UNIQUE, name TEXT NOT NULL, sex TEXT NOT NULL,
    birth_date TEXT NOT NULL, phone TEXT, address TEXT, allergies TEXT, created_at TEXT NOT NULL);
CREATE TABLE encounters (id INTEGER PRIMARY KEY, patient_id INTEGER NOT NULL REFERENCES patients(id),
    admitted TEXT NOT NULL, discharged TEXT, ward TEXT NOT NULL, diagnosis_code TEXT NOT NULL, notes TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, encounter_id INTEGER NOT NULL REFERENCES encounters(id),
    ordered_at TEXT NOT NULL, item TEXT NOT NULL, quantity NUMERIC NOT NULL, status TEXT NOT NULL, prescriber TEXT);
CREATE TABLE lab_results (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL, test_code TEXT NOT NULL,
    value_num NUMERIC, value_text TEXT, unit TEXT, ref_low NUMERIC, ref_high NUMERIC, flag TEXT,
    resulted_at TEXT NOT NULL, comment TEXT);
"""

SQLITE_FILL = """
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {patients})
INSERT INTO patients SELECT i, printf('MRN%010d', i), '患者' || i, CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END,
    date('1930-01-01', '+' || (i * 7919 % 32000) || ' days'), CASE WHEN i % 3 = 0 THEN NULL ELSE printf('1%010d', i * 104729 % 10000000000) END,
    CASE WHEN i % 5 = 0 THEN NULL ELSE '北京市海淀区' || (i % 300) || '号院' END, CASE WHEN i % 7 = 0 THEN 'penicillin' END,
    datetime('2015-01-01', '+' || (i * 997 % 300000000) || ' seconds') FROM g;
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {encounters})
INSERT INTO encounters SELECT i, 1 + (i * 7 % {patients}), datetime('2018-01-01', '+' || (i * 131 % 200000000) || ' seconds'),
    CASE WHEN i % 4 = 0 THEN NULL ELSE datetime('2018-01-01', '+' || (i * 131 % 200000000 + 86400 * (1 + i % 20)) || ' seconds') END,
    'ward' || (i % 10), char(65 + i % 26) || printf('%02d.%d', i % 100, i % 10), CASE WHEN i % 3 = 0 THEN '主诉: 发热咳嗽 ' || i END FROM g;
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {orders})
INSERT INTO orders SELECT i, 1 + (i * 13 % {encounters}), datetime('2018-01-01', '+' || (i * 67 % 200000000) || ' seconds'),
    'drug' || (i % 8), round(1 + (i % 300) / 7.0, 2), 'status' || (i % 5), CASE WHEN i % 6 = 0 THEN NULL ELSE printf('DR%04d', i % 500) END FROM g;
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {lab_results})
INSERT INTO lab_results SELECT i, 1 + (i * 17 % {orders}), 'T' || (i % 14), CASE WHEN i % 9 = 0 THEN NULL ELSE round((i * 7919 % 2000000) / 10000.0, 4) END,
    CASE WHEN i % 9 = 0 THEN '阴性' END, CASE WHEN i % 9 = 0 THEN NULL ELSE 'mmol/L' END, (i % 50) / 10.0,
    CASE WHEN i % 2 = 0 THEN NULL ELSE (50 + i % 150) / 3.0 END, CASE WHEN i % 11 = 0 THEN 'H' WHEN i % 13 = 0 THEN 'L' END,
    datetime('2018-01-01', '+' || (i * 53 % 200000000) || ' seconds'), CASE WHEN i % 10 = 0 THEN '复查 ' || i END FROM g;
CREATE INDEX encounters_patient_idx ON encounters (patient_id);
CREATE INDEX encounters_admitted_idx ON encounters (admitted);
CREATE INDEX orders_encounter_idx ON orders (encounter_id);
CREATE INDEX lab_results_order_idx ON lab_results (order_id);
"""


def build_sqlite(scale: float, path: Path) -> int:
    """Given a scale and a file path, (re)create the SQLite data set there and return its size."""
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(SQLITE_SCHEMA + SQLITE_FILL.format(**rows_for(scale)))
        db.commit()
    finally:
        db.close()
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--engine", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--dsn", default=DEFAULT_DSN, help="maintenance connection (PostgreSQL); the data goes to bench_his")
    ap.add_argument("--path", type=Path, default=Path("bench_his.sqlite"), help="SQLite file")
    ap.add_argument("--if-missing", action="store_true", help="keep an existing bench_his of the same scale")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.monotonic()
    if args.engine == "postgres":
        if args.if_missing and pg_marker(args.dsn) == args.scale:
            logger.info("bench_his at scale %g exists (%d MB); kept", args.scale, (pg_database_size(args.dsn) or 0) >> 20)
            return 0
        size = build_postgres(args.scale, args.dsn)
    else:
        size = build_sqlite(args.scale, args.path)
    logger.info("built %s scale %g: %d MB in %.1fs", args.engine, args.scale, size >> 20, time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
