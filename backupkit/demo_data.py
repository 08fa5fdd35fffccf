"""A synthetic hospital database for the demo and tests: patients, encounters,
orders and lab_results with Chinese and Latin text, NULLs, BLOBs and dates.
Deterministic for a given seed."""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

SCHEMA = """
CREATE TABLE patients (
    id INTEGER PRIMARY KEY, mrn TEXT NOT NULL UNIQUE, name TEXT NOT NULL, sex TEXT,
    born DATE, phone TEXT, address TEXT, photo BLOB
);
CREATE TABLE encounters (
    id INTEGER PRIMARY KEY, patient_id INTEGER NOT NULL REFERENCES patients(id),
    kind TEXT NOT NULL, department TEXT NOT NULL, admitted TIMESTAMP NOT NULL, discharged TIMESTAMP,
    diagnosis TEXT
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY, encounter_id INTEGER NOT NULL REFERENCES encounters(id),
    item TEXT NOT NULL, quantity REAL, unit_price NUMERIC, ordered_at TIMESTAMP NOT NULL, note TEXT
);
CREATE TABLE lab_results (
    id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id),
    test_code TEXT NOT NULL, value REAL, unit TEXT, flag TEXT, resulted_at TIMESTAMP, raw BLOB, comment TEXT
);
CREATE INDEX encounters_patient ON encounters(patient_id);
CREATE INDEX orders_encounter ON orders(encounter_id);
CREATE INDEX lab_results_order ON lab_results(order_id);
"""

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"
DEPTS = ["内科 Internal Medicine", "外科 Surgery", "儿科 Pediatrics", "妇产科 Obstetrics", "急诊科 Emergency",
         "检验科 Laboratory", "放射科 Radiology", "心内科 Cardiology"]
DIAG = ["高血压 Hypertension", "2型糖尿病 Type 2 diabetes", "社区获得性肺炎 Pneumonia", "急性阑尾炎 Appendicitis",
        "冠心病 CAD", None]
ITEMS = [("血常规 CBC", 25.0), ("肝功能 LFT", 80.5), ("胸部CT Chest CT", 420.0), ("阿莫西林 Amoxicillin 0.5g", 1.2),
         ("生理盐水 NS 500ml", 4.8), ("心电图 ECG", 30.0)]
TESTS = [("WBC", "10^9/L", 3.5, 9.5), ("HGB", "g/L", 115, 150), ("GLU", "mmol/L", 3.9, 6.1), ("ALT", "U/L", 7, 40),
         ("CRE", "umol/L", 57, 97)]


def create_hospital_db(path: Path, *, rows: int = 120_000, seed: int = 2026, now: datetime | None = None) -> dict:
    """Create ``path`` with about ``rows`` rows in all; return the row count per table."""
    rnd = random.Random(seed)
    now = now or datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    n_pat = max(10, rows // 12)
    n_enc = max(10, rows // 6)
    n_ord = max(10, rows // 3)
    n_lab = max(10, rows - n_pat - n_enc - n_ord)
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.execute("PRAGMA journal_mode=WAL")
    fmt = "%Y-%m-%d %H:%M:%S"

    def pat(i):
        name = rnd.choice(SURNAMES) + "".join(rnd.choice(GIVEN) for _ in range(rnd.randint(1, 2)))
        if i % 17 == 0:
            name += f" ({rnd.choice(['Li', 'Wang', 'Smith', 'Müller'])})"
        born = (datetime(1930, 1, 1) + timedelta(days=rnd.randint(0, 33000))).date().isoformat()
        photo = rnd.randbytes(rnd.randint(16, 96)) if i % 5 == 0 else None
        return (i, f"MRN{i:08d}", name, rnd.choice("MF") if i % 41 else None, born,
                f"13{rnd.randint(0, 999999999):09d}" if i % 3 else None,
                f"{rnd.choice(['北京市', '上海市', '成都市', '广州市'])}{rnd.randint(1, 999)}号" if i % 4 else None, photo)

    def enc(i):
        adm = now - timedelta(minutes=rnd.randint(0, 60 * 24 * 365)) if i < n_enc else now - timedelta(minutes=5)
        dis = (adm + timedelta(hours=rnd.randint(1, 400))).strftime(fmt) if i % 7 else None
        return (i, rnd.randint(1, n_pat), rnd.choice(["门诊 outpatient", "住院 inpatient", "急诊 emergency"]),
                rnd.choice(DEPTS), adm.strftime(fmt), dis, rnd.choice(DIAG))

    def order(i):
        item, price = rnd.choice(ITEMS)
        return (i, rnd.randint(1, n_enc), item, round(rnd.uniform(0.5, 10), 3) if i % 9 else None, price,
                (now - timedelta(minutes=rnd.randint(0, 500000))).strftime(fmt),
                "加急 urgent" if i % 23 == 0 else None)

    def lab(i):
        code, unit, lo, hi = rnd.choice(TESTS)
        v = round(rnd.uniform(lo * 0.6, hi * 1.4), 4) if i % 11 else None
        flag = None if v is None else ("H" if v > hi else "L" if v < lo else None)
        return (i, rnd.randint(1, n_ord), code, v, unit, flag,
                (now - timedelta(minutes=rnd.randint(0, 500000))).strftime(fmt) if i % 13 else None,
                rnd.randbytes(24) if i % 29 == 0 else None, "溶血 hemolysed" if i % 97 == 0 else None)

    with db:
        db.executemany("INSERT INTO patients VALUES (?,?,?,?,?,?,?,?)", (pat(i) for i in range(1, n_pat + 1)))
        db.executemany("INSERT INTO encounters VALUES (?,?,?,?,?,?,?)", (enc(i) for i in range(1, n_enc + 1)))
        db.executemany("INSERT INTO orders VALUES (?,?,?,?,?,?,?)", (order(i) for i in range(1, n_ord + 1)))
        db.executemany("INSERT INTO lab_results VALUES (?,?,?,?,?,?,?,?,?)", (lab(i) for i in range(1, n_lab + 1)))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return {"patients": n_pat, "encounters": n_enc, "orders": n_ord, "lab_results": n_lab}
