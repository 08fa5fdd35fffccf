#!/usr/bin/env python3
"""Mutation testing for the modules that decide verdicts and integrity.

An operator-flipping mutator (no dependency): for every comparison, boolean
operator, ``not``, arithmetic operator, small integer constant and True/False
in a module, make one mutant with that one site flipped, run the module's
tests against it in a scratch copy of the tree, and count the mutants the
tests kill (fail or time out). The working tree is never modified.

    .venv/bin/python scripts/mutate.py                 # every module in MODULES
    .venv/bin/python scripts/mutate.py backupkit/due.py  # one module
    .venv/bin/python scripts/mutate.py --jobs 2 --list   # also list survivors

Exit 1 when a module's kill rate is below --min (default 0.90).
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CLOCK_DUE = [f"tests/test_clock.py::{t}" for t in (
    "test_the_tolerance_is_five_minutes", "test_in_future", "test_in_future_uses_the_given_tolerance",
    "test_backup_due_ignores_a_backup_from_the_future", "test_backup_due_uses_the_given_tolerance",
    "test_drill_due_ignores_a_drill_from_the_future", "test_drill_due_uses_the_given_tolerance")]
_CLOCK_STATUS = [f"tests/test_clock.py::{t}" for t in (
    "test_status_tolerates_a_record_up_to_the_tolerance_ahead",
    "test_status_backup_one_second_past_the_tolerance_is_clock_skew", "test_status_copy_past_the_tolerance_is_clock_skew",
    "test_status_drill_past_the_tolerance_is_clock_skew", "test_status_judges_the_last_record_by_seq_not_by_time",
    "test_status_without_skew_reports_zero")]

# test_head_line_round_trip_and_forgery "forges" a line with line[:-1] + "0", which is the genuine line whenever
# the random key's signature ends in 0 (1 run in 16): deselected so a mutant is never "killed" by chance;
# tests/test_units_anchor.py covers parse_head forgery deterministically.
_PITR_RULE = "tests/test_pgbackrest_pitr.py::test_a_pitr_drill_never_stands_in_for_the_regular_drill"
_HISTORY = ["tests/test_history.py", "--deselect", "tests/test_history.py::test_head_line_round_trip_and_forgery"]

# module -> the tests that must kill its mutants: pure unit tests only (no CLI runs), each run well under 5 s
MODULES: dict[str, list[str]] = {
    "backupkit/keyed.py": ["tests/test_units_keyed.py"],
    "backupkit/verdict.py": ["tests/test_decisions.py", "tests/test_postgres_units.py", "tests/test_pg_units.py",
                             "tests/test_units_verdict.py"],
    "backupkit/evidence/rules.py": ["tests/test_evidence_rules.py", "tests/test_units_rules.py"],
    "backupkit/expect.py": ["tests/test_decisions.py", "tests/test_units_expect.py"],
    "backupkit/retention.py": ["tests/test_decisions.py", *_HISTORY, "tests/test_units_retention.py"],
    "backupkit/due.py": ["tests/test_decisions.py", "tests/test_units_due.py", *_CLOCK_DUE],
    "backupkit/durations.py": ["tests/test_decisions.py", "tests/test_units_durations.py"],
    "backupkit/history.py": [*_HISTORY, "tests/test_units_history.py", _PITR_RULE],
    "backupkit/anchor.py": [*_HISTORY, "tests/test_units_anchor.py"],
    "backupkit/ledger.py": [*_HISTORY, "tests/test_ledger_units.py"],
    "backupkit/manifest.py": ["tests/test_manifest_units.py"],
    "backupkit/evidence/verify.py": ["tests/test_units_evidence_verify.py"],
    "backupkit/actions/status.py": ["tests/test_status.py", "tests/test_units_status.py", *_CLOCK_STATUS, _PITR_RULE],
    "backupkit/engines/pg_walcut.py": ["tests/test_pg_walcut.py"],
    "backupkit/engines/mariadb_dumptext.py": ["tests/test_units_mariadb_dumptext.py"],
    "backupkit/engines/pg_archive.py": ["tests/test_pg_units.py", "tests/test_pg_dumptext.py", "-k",
                                        "walk or synthetic or truncated or toc_of or hostile_schema"],
    "backupkit/records.py": ["tests/test_units_records.py", "tests/test_units_history.py", "tests/test_units_status.py"],
}

CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
            ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
            ast.Mod: ast.Mult}


def _skip(node: ast.AST, parents: dict) -> bool:
    """Docstrings, log calls and message f-strings are not decisions."""
    p = parents.get(node)
    while p is not None:
        if isinstance(p, ast.JoinedStr):
            return True
        if isinstance(p, ast.Call) and isinstance(p.func, ast.Attribute) and p.func.attr in (
                "debug", "info", "warning", "error", "exception"):
            return True
        p = parents.get(p)
    return False


def sites(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    out = []
    for node in ast.walk(tree):
        if _skip(node, parents):
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in CMP_SWAP:
                    out.append((node, f"cmp{i}"))
        elif isinstance(node, ast.BoolOp):
            out.append((node, "boolop"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            out.append((node, "not"))
        elif isinstance(node, ast.BinOp) and type(node.op) in BIN_SWAP:
            out.append((node, "binop"))
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            out.append((node, "bool"))
        elif isinstance(node, ast.Constant) and type(node.value) is int and not isinstance(parents.get(node), ast.Subscript):
            out.append((node, "int"))
    return out


class _Apply(ast.NodeTransformer):
    def __init__(self, target: ast.AST, how: str):
        self.target, self.how = target, how

    def visit(self, node):
        if node is self.target:
            return self.mutate(node)
        return super().visit(node)

    def mutate(self, node):
        n = copy.copy(node)
        if self.how.startswith("cmp"):
            i = int(self.how[3:])
            n.ops = list(node.ops)
            n.ops[i] = CMP_SWAP[type(node.ops[i])]()
        elif self.how == "boolop":
            n.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        elif self.how == "not":
            return node.operand
        elif self.how == "binop":
            n.op = BIN_SWAP[type(node.op)]()
        elif self.how == "bool":
            n.value = not node.value
        elif self.how == "int":
            n.value = node.value + 1
        return n


def mutant_source(source: str, index: int) -> tuple[str, str]:
    tree = ast.parse(source)
    node, how = sites(tree)[index]
    where = f"line {node.lineno}: {how} in `{ast.unparse(node)[:70]}`"
    new = _Apply(node, how).visit(tree)
    ast.fix_missing_locations(new)
    return ast.unparse(new), where


def run_tests(tree: Path, tests: list[str], timeout: float) -> bool:
    """True when the tests pass (the mutant survived)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                           cwd=tree, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return p.returncode == 0


def scratch_tree() -> Path:
    d = Path(tempfile.mkdtemp(prefix="backupkit-mutate-"))
    for name in ("backupkit", "tests", "pyproject.toml"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, d / name)
    return d


def mutate_module(module: str, tests: list[str], jobs: int, timeout: float) -> tuple[int, list[str]]:
    source = (ROOT / module).read_text()
    n = len(sites(ast.parse(source)))
    trees = [scratch_tree() for _ in range(jobs)]
    free = list(trees)

    def one(i: int):
        tree = free.pop()
        try:
            code, where = mutant_source(source, i)
            (tree / module).write_text(code)
            survived = run_tests(tree, tests, timeout)
            (tree / module).write_text(source)
            return where if survived else None
        finally:
            free.append(tree)

    with ThreadPoolExecutor(jobs) as pool:
        survivors = [w for w in pool.map(one, range(n)) if w]
    for t in trees:
        shutil.rmtree(t, ignore_errors=True)
    return n, survivors


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("modules", nargs="*")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--min", type=float, default=0.90)
    ap.add_argument("--list", action="store_true", help="print every surviving mutant")
    args = ap.parse_args()
    chosen = args.modules or list(MODULES)
    ok = True
    for m in chosen:
        tests = MODULES.get(m)
        if tests is None:
            print(f"{m}: no tests mapped in scripts/mutate.py MODULES", file=sys.stderr)
            return 2
        baseline = scratch_tree()
        passing = run_tests(baseline, tests, args.timeout)
        shutil.rmtree(baseline, ignore_errors=True)
        if not passing:
            print(f"{m}: its tests fail without any mutation; fix them first", file=sys.stderr)
            return 2
        n, survivors = mutate_module(m, tests, args.jobs, args.timeout)
        rate = 1 - len(survivors) / n if n else 1.0
        ok &= rate >= args.min
        print(f"{m:34} {n:4d} mutants  {n - len(survivors):4d} killed  {rate:6.1%}  {'PASS' if rate >= args.min else 'FAIL'}",
              flush=True)
        if args.list:
            for s in survivors:
                print(f"    survived: {s}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
