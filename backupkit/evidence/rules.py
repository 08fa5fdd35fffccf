"""Verdict rules: pure functions from counted facts to one of the five verdicts.

Each function takes numbers (never records) and the thresholds that the
control mappings (``backupkit/data/controls/*.yaml``) give as data, so every
boundary is pinned by table-driven tests (tests/test_evidence_rules.py).
Percentages are compared in integers (``n * 100 >= pct * m``): no float edge.
"""

from __future__ import annotations

CONFORMANT = "conformant"
PARTIAL = "partial"
NON = "non_conformant"
NA = "not_applicable"
DOCUMENTS = "documents"

VERDICTS = (CONFORMANT, PARTIAL, NON, NA, DOCUMENTS)
# worst first: combining verdicts keeps the worst; not_applicable only when all are
_RANK = {NON: 0, PARTIAL: 1, DOCUMENTS: 2, CONFORMANT: 3}


def worst(verdicts) -> str:
    """The combined verdict of several rules or systems: the worst one; not_applicable when all are (or none)."""
    vs = [v for v in verdicts if v != NA]
    if not vs:
        return NA
    return min(vs, key=lambda v: _RANK[v])


def ratio(n: int, m: int, full_percent: int, partial_percent: int) -> str:
    """``n`` of ``m`` (days with a backup, copies in time): conformant at ≥ full_percent of m, partial at
    ≥ partial_percent, else non-conformant. Nothing due (m == 0) is not applicable."""
    if m <= 0:
        return NA
    if n * 100 >= full_percent * m:
        return CONFORMANT
    if n * 100 >= partial_percent * m:
        return PARTIAL
    return NON


def percent(n: int, m: int) -> int:
    """Whole percent, rounded down (99.9% shows 99, never 100)."""
    return (n * 100) // m if m else 0


def drill_gaps(gaps: list[float], every: float, passing: int) -> str:
    """Gaps (seconds) without a passing drill, against ``every``: conformant when none exceeds it,
    partial when drills passed but some gap exceeds it, non-conformant with no passing drill."""
    if passing <= 0:
        return NON
    return CONFORMANT if all(g <= every for g in gaps) else PARTIAL


def last_drill(last_passed: bool | None, any_passed: bool) -> str:
    """The latest drill (by seq): passed → conformant; failed after an earlier pass → partial;
    failed with no pass or no drill at all (None) → non-conformant."""
    if last_passed is True:
        return CONFORMANT
    if last_passed is False and any_passed:
        return PARTIAL
    return NON


def rto(measured: list[float], tier: float) -> str:
    """Measured recovery times (seq order) against the tier: all within → conformant; the last within
    but an earlier one over → partial; the last over, or nothing measured → non-conformant."""
    if not measured:
        return NON
    if measured[-1] > tier:
        return NON
    return CONFORMANT if all(m <= tier for m in measured) else PARTIAL


def all_of(ok: int, n: int) -> str:
    """Every one of ``n`` items has the property (hashed, encrypted): conformant; some: partial; none or
    no items: non-conformant."""
    if n <= 0 or ok <= 0:
        return NON
    return CONFORMANT if ok >= n else PARTIAL


def declared(text: str, otherwise: str = PARTIAL) -> str:
    """A declaration outside the tool (real-time replication): conformant when made, else ``otherwise``."""
    return CONFORMANT if text.strip() else otherwise


def failures(n_failed: int) -> str:
    """Failed verifications in the period: none → conformant, any → partial."""
    return CONFORMANT if n_failed <= 0 else PARTIAL


def stated(text: str) -> str:
    """A fact the organisation states (storage media): conformant when stated, partial when not."""
    return CONFORMANT if text.strip() else PARTIAL
