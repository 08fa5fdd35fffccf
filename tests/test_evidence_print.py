"""The report and the forms as an assessor sees them: headless Chromium renders them without console
errors, prints them on A4 with page numbers, and shows one calendar cell per day and one bar per drill.
Needs the Debian packages chromium, fonts-noto-cjk and poppler-utils (scripts/test.sh installs them);
missing, the test fails rather than skips."""

import re
import shutil
import subprocess
from datetime import datetime

import test_evidence_history as H


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (scripts/test.sh installs chromium, fonts-noto-cjk and poppler-utils)"
    return path


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", *args], capture_output=True, text=True, timeout=180)


def test_report_and_forms_print_on_a4_with_page_numbers(workspace, tmp_path):
    assert subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout.strip(), \
        "no Chinese font (Debian package fonts-noto-cjk)"
    H.build(workspace)
    H.real_failed_drill(workspace)
    today = datetime.now(H.CST).date()
    b = tmp_path / "zh"
    workspace.ok("evidence", "export", "--since", str(H.d0()), "--until", str(today), "--out", str(b))
    n_days = (today - H.d0()).days + 1
    for page, words in (("report.html", ["测评结论", "异常事项"]), ("paperwork.html", ["数据备份恢复策略", "批准人"])):
        url = (b / page).as_uri()
        dom = chromium("--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert ":CONSOLE" not in dom.stderr, [x for x in dom.stderr.splitlines() if ":CONSOLE" in x]
        for w in words:
            assert w in dom.stdout
        if page == "report.html":
            cells = re.findall(r'<td class="cal-day[^"]*"', dom.stdout)
            assert len(cells) == n_days  # one system: a cell for every day of the period, no more
            bars = re.findall(r'class="fill rto-bar', dom.stdout)
            assert len(bars) == len(H.PASSED_DRILL_DAYS) + 1 + 1  # three passed, the slow one, the corrupt one
            assert re.search(r'<th class="m">月份</th>(<th>\d+</th>){31}', dom.stdout)  # the printed date axis
        pdf = tmp_path / f"{page}.pdf"
        r = chromium("--no-pdf-header-footer", f"--print-to-pdf={pdf}", url)
        assert r.returncode == 0 and pdf.stat().st_size > 10_000, r.stderr[-2000:]
        info = subprocess.run([tool("pdfinfo"), str(pdf)], capture_output=True, text=True).stdout
        assert re.search(r"Page size:\s+59[45]\.\d+ x 84[12]\.\d+ pts \(A4\)", info), info
        pages = int(re.search(r"Pages:\s+(\d+)", info)[1])
        assert pages >= 3
        text = subprocess.run([tool("pdftotext"), "-layout", str(pdf), "-"], capture_output=True, text=True).stdout
        assert f"第 2 页，共 {pages} 页" in text and f"第 {pages} 页，共 {pages} 页" in text
        assert "某市第三人民医院" in text  # the running header names the unit
        png = tmp_path / f"{page}.png"
        r = chromium("--hide-scrollbars", "--window-size=1200,1600", f"--screenshot={png}", url)
        assert png.stat().st_size > 50_000, r.stderr[-2000:]
