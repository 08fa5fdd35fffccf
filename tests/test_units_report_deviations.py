"""The evidence report renders each kind of verdict sentence in the assessor's language; what a tool
wrote (check names, error text) stays verbatim in <code>."""

from backupkit.evidence.report import deviation
from backupkit.verdict import NOT_COMPARED, drill_verdict


def test_a_waived_check_reads_as_a_deviation_in_both_languages():
    v = drill_verdict(restored=True, rto_met=True, rpo_met=True, checks=[
        {"name": "rman restore validate check logical", "status": "passed", "proves_data": True},
        {"name": "data compared", "status": "waived", "detail": "no copy was opened"}])
    assert v.passed and len(v.reasons) == 1
    assert str(deviation(v.reasons[0], "zh")) == "偏差（策略豁免）：<code>data compared</code>：<code>no copy was opened</code>"
    assert str(deviation(v.reasons[0], "en")) == ("deviation (waived by policy): <code>data compared</code>: "
                                                 "<code>no copy was opened</code>")


def test_failed_and_skipped_checks_and_fixed_sentences_are_translated():
    assert str(deviation("check failed: fingerprint A: rows differ", "zh")) == \
        "检查未通过：<code>fingerprint A</code>：<code>rows differ</code>"
    assert str(deviation("check skipped (unproven): amcheck", "zh")) == "检查被跳过（未证明）：<code>amcheck</code>"
    assert str(deviation(NOT_COMPARED, "zh")) == "没有通过任何能证明数据的检查（未比对数据指纹）"
    assert str(deviation("something <new>", "zh")) == "原文：<code>something &lt;new&gt;</code>"
