"""SFTP rows for run.py: backupkit upload vs OpenSSH `sftp put`, and read-back
verification vs backupkit upload, per round, against a private loopback sshd."""

from __future__ import annotations

import sftp_bench
from run import Bench, RowResult, row

_speeds: list[tuple[float, float, float]] = []


def _measure(b: Bench) -> list[tuple[float, float, float]]:
    if not _speeds:
        sftp_bench.measure(256 * b.scale, max(3, b.repeat), workdir=b.workdir)
        _speeds.extend(sftp_bench.measure.last_speeds)  # (openssh, backupkit, read-back) MB/s per round
    return _speeds


@row
def row_sftp_upload(b: Bench) -> RowResult:
    return RowResult("offsite copy: backupkit SFTP upload / OpenSSH sftp put",
                     [bk / ssh for ssh, bk, _ in _measure(b)], ">= 0.9")


@row
def row_sftp_readback(b: Bench) -> RowResult:
    return RowResult("read-back verification / backupkit upload", [rb / bk for _, bk, rb in _measure(b)], ">= 0.8")
