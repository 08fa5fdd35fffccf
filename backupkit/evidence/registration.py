"""The key registration form (公钥登记表): printed once, signed on paper, handed to the assessor.

It carries the signing key's full SHA-256 fingerprint; ``evidence verify --fingerprint`` pins it,
so a bundle re-signed with any other key is refused. Nothing secret is printed.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone

from jinja2 import Environment, select_autoescape

from ..keys import fingerprint, fingerprint_groups, public_pem, public_raw
from . import i18n
from .settings import load_settings

TEXT = {
    "zh": {"title": "数据备份恢复审计证据 签名公钥登记表", "unit": "单位名称", "filing": "备案编号", "level": "安全保护等级",
           "host": "签名主机", "date": "登记日期", "alg": "算法", "fp": "公钥指纹（SHA-256）", "kid": "密钥 ID（指纹前 16 位）",
           "pem": "公钥（PEM）", "raw": "公钥（Base64）", "tool": "生成工具",
           "how": "测评师验证证据包时使用：backupkit evidence verify 证据包 --fingerprint 上述指纹。"
                  "证据包内的公钥指纹与本表不一致时，该证据包不可信。",
           "by": "登记人（签字）", "checker": "审核人（签字）", "approver": "批准人（签字）", "assessor": "测评机构接收人（签字）",
           "d": "日期", "not_set": "未填写", "level_n": "第{n}级"},
    "en": {"title": "Evidence signing key registration form", "unit": "Organisation", "filing": "MLPS filing number",
           "level": "Protection level", "host": "Signing host", "date": "Registered on", "alg": "Algorithm",
           "fp": "Key fingerprint (SHA-256)", "kid": "Key ID (first 16 hex of the fingerprint)", "pem": "Public key (PEM)",
           "raw": "Public key (Base64)", "tool": "Tool",
           "how": "The assessor verifies bundles with: backupkit evidence verify BUNDLE --fingerprint <the fingerprint above>. "
                  "A bundle whose key fingerprint differs from this form is not to be trusted.",
           "by": "Registered by (signature)", "checker": "Checked by (signature)", "approver": "Approved by (signature)",
           "assessor": "Received by the assessor (signature)", "d": "Date", "not_set": "not set", "level_n": "level {n}"},
}


def _fields(ctx, lang: str) -> dict:
    from . import policystore

    st = load_settings(ctx.config.file)
    tz = i18n.zone(st.timezone)
    policystore.remember(ctx.config.ledger, list(ctx.policies.values()))
    T = TEXT[lang]
    pub = ctx.signer.public
    now = datetime.now(timezone.utc).astimezone(tz)
    return {"T": T, "unit": st.unit or T["not_set"], "filing": st.filing_number or T["not_set"],
            "level": T["level_n"].format(n=st.level), "host": ctx.operator.get("host", ""),
            "date": now.strftime("%Y-%m-%d") + f" ({i18n.offset_label(tz, now)})", "alg": "Ed25519",
            "fp": fingerprint_groups(fingerprint(pub)), "kid": ctx.signer.id,
            "pem": public_pem(pub).decode("ascii").strip(), "raw": base64.b64encode(public_raw(pub)).decode(),
            "tool": ctx.tool}


def registration_text(ctx, lang: str) -> str:
    f = _fields(ctx, lang)
    T = f["T"]
    line = "-" * 64
    rows = [T["title"], line, f"{T['unit']}: {f['unit']}", f"{T['filing']}: {f['filing']}", f"{T['level']}: {f['level']}",
            f"{T['host']}: {f['host']}", f"{T['date']}: {f['date']}", f"{T['alg']}: {f['alg']}", f"{T['tool']}: {f['tool']}",
            "", f"{T['fp']}:", f"    {f['fp']}", f"{T['kid']}: {f['kid']}", f"{T['raw']}: {f['raw']}", "",
            f"{T['pem']}:", f["pem"], "", T["how"], ""]
    for who in ("by", "checker", "approver", "assessor"):
        rows.append(f"{T[who]}: ____________________    {T['d']}: ______________")
    return "\n".join(rows)


HTML = """<!DOCTYPE html><html lang="{{ 'zh-CN' if zh else 'en' }}"><head><meta charset="utf-8"><title>{{ T.title }}</title>
<style>@page { size: A4; margin: 22mm 18mm; } body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; font-size: 11pt; color: #1a202c; max-width: 780px; margin: 2em auto; }
h1 { text-align: center; font-size: 18pt; margin-bottom: 1.2em; } table { border-collapse: collapse; width: 100%; }
td { border: 1px solid #4a5568; padding: 6px 8px; vertical-align: top; } td:first-child { width: 12em; background: #f7fafc; font-weight: 600; }
.fp { font-family: "DejaVu Sans Mono", monospace; font-size: 13pt; font-weight: 700; letter-spacing: .05em; }
pre { font-size: 9pt; margin: 0; } .how { margin: 1.2em 0; padding: .6em .8em; border: 1.5px solid #2c5282; }
.sign { display: grid; grid-template-columns: 1fr 1fr; gap: 2.2em 2em; margin-top: 2em; } .sign div { border-top: 1px solid #1a202c; padding-top: .3em; min-height: 3.5em; }
@media print { body { margin: 0; max-width: none; } }</style></head><body>
<h1>{{ T.title }}</h1><table>
<tr><td>{{ T.unit }}</td><td>{{ unit }}</td></tr><tr><td>{{ T.filing }}</td><td>{{ filing }}</td></tr>
<tr><td>{{ T.level }}</td><td>{{ level }}</td></tr><tr><td>{{ T.host }}</td><td><code>{{ host }}</code></td></tr>
<tr><td>{{ T.date }}</td><td>{{ date }}</td></tr><tr><td>{{ T.alg }}</td><td>{{ alg }}</td></tr>
<tr><td>{{ T.fp }}</td><td class="fp">{{ fp }}</td></tr><tr><td>{{ T.kid }}</td><td><code>{{ kid }}</code></td></tr>
<tr><td>{{ T.raw }}</td><td><code>{{ raw }}</code></td></tr><tr><td>{{ T.pem }}</td><td><pre>{{ pem }}</pre></td></tr>
<tr><td>{{ T.tool }}</td><td><code>{{ tool }}</code></td></tr></table>
<div class="how">{{ T.how }}</div>
<div class="sign"><div>{{ T.by }}<br>{{ T.d }}：</div><div>{{ T.checker }}<br>{{ T.d }}：</div><div>{{ T.approver }}<br>{{ T.d }}：</div><div>{{ T.assessor }}<br>{{ T.d }}：</div></div>
</body></html>"""


def registration_html(ctx, lang: str) -> str:
    env = Environment(autoescape=select_autoescape(default_for_string=True))
    return env.from_string(HTML).render(zh=lang == "zh", **_fields(ctx, lang))
