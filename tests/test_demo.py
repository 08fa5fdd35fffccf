"""The README's first command: the demo runs the whole loop and ends with a verified bundle."""

import subprocess
import sys


def test_demo_runs_the_whole_loop(tmp_path):
    p = subprocess.run([sys.executable, "-m", "backupkit.cli", "demo", "--dir", str(tmp_path / "demo"), "--rows", "2000"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "6/6 bundle" in p.stdout and "key pinned by the signing key of config" in p.stdout, p.stdout
    assert "drill verdict passed" in p.stdout
    assert (tmp_path / "demo" / "evidence" / "report.html").stat().st_size > 10_000
