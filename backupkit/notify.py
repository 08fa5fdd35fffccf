"""Notifications on failure or overdue: webhooks (generic JSON, WeCom, DingTalk,
Slack) and SMTP email. A notification that cannot be delivered is logged,
never raised: it must not turn a good backup into a failed one."""

from __future__ import annotations

import json
import logging
import smtplib
import socket
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from email.message import EmailMessage

from .config import NotifyConfig
from .keys import check_private_mode

logger = logging.getLogger(__name__)


def event(kind: str, system: str, message: str, *, severity: str = "error") -> dict:
    return {"source": "backupkit", "event": kind, "severity": severity, "system": system, "message": message,
            "host": socket.gethostname(), "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _text(ev: dict) -> str:
    return f"[backupkit {ev['severity']}] {ev['host']} {ev['system']}: {ev['event']}: {ev['message']}"


def webhook_payload(fmt: str, ev: dict) -> dict:
    """The JSON body for one webhook format."""
    if fmt in ("wecom", "dingtalk"):
        return {"msgtype": "text", "text": {"content": _text(ev)}}
    if fmt == "slack":
        return {"text": _text(ev)}
    return ev


def send(cfg: NotifyConfig, ev: dict) -> list[str]:
    """Deliver ``ev`` everywhere configured; return a list of delivery errors (also logged)."""
    category = "success" if ev["severity"] == "info" else ("overdue" if ev["event"] == "overdue" else "failure")
    if category not in cfg.on:
        return []
    errors = []
    for hook in cfg.webhooks:
        body = json.dumps(webhook_payload(hook.format, ev), ensure_ascii=False).encode()
        req = urllib.request.Request(hook.url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=hook.timeout) as resp:
                resp.read()
        except Exception as e:  # noqa: BLE001 - any delivery failure is reported the same way
            host = urllib.parse.urlsplit(hook.url).netloc  # never the path: webhook paths carry tokens
            errors.append(f"webhook {host}: {type(e).__name__}: {getattr(e, 'reason', e)}")
    if cfg.email is not None:
        m = cfg.email
        msg = EmailMessage()
        msg["Subject"] = f"[backupkit] {ev['system']}: {ev['event']} ({ev['severity']})"
        msg["From"] = m.sender
        msg["To"] = ", ".join(m.to)
        msg.set_content(_text(ev) + "\n\n" + json.dumps(ev, ensure_ascii=False, indent=2))
        try:
            with smtplib.SMTP(m.host, m.port, timeout=m.timeout) as s:
                if m.starttls:
                    s.starttls()
                if m.user:
                    if m.password_file is None:
                        raise ValueError("notify.email.user is set but password_file is not")
                    check_private_mode(m.password_file, "SMTP password file")
                    s.login(m.user, m.password_file.read_text().strip())
                s.send_message(msg)
        except Exception as e:  # noqa: BLE001
            errors.append(f"email via {m.host}:{m.port}: {type(e).__name__}: {e}")
    for e in errors:
        logger.warning("notification not delivered: %s", e)
    return errors
