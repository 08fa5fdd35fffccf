"""Notifications on failure or overdue: webhooks (generic JSON, WeCom, DingTalk,
Slack) and SMTP email. A notification that cannot be delivered is logged,
never raised: it must not turn a good backup into a failed one.

Webhook URLs and SMTP passwords are secrets: a delivery error names the
endpoint by its redacted URL (backupkit.redact) and every error text is
scrubbed of the URL's credentials and the SMTP password before it is logged."""

from __future__ import annotations

import base64
import json
import logging
import smtplib
import socket
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from email.message import EmailMessage

from .config import NotifyConfig
from .keys import check_private_mode
from .redact import MASK, redact_text, redact_url, url_secrets

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


def _scrub(text: str, secrets: list[str]) -> str:
    """``text`` redacted, and without any of the literal ``secrets`` (which an exception may quote outside a URL)."""
    text = redact_text(text)
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return text


def _webhook_request(url: str, body: bytes) -> urllib.request.Request:
    """A POST request; credentials in the URL's userinfo are sent as HTTP Basic auth, never in the request line."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not an http(s) URL; check notify.webhooks in the config")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at:
        url = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    if at:
        user, _, password = userinfo.partition(":")
        cred = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
        # unredirected: a redirect to another host must not carry the credentials along
        req.add_unredirected_header("Authorization", "Basic " + base64.b64encode(cred).decode())
    return req


def send(cfg: NotifyConfig, ev: dict) -> list[str]:
    """Deliver ``ev`` everywhere configured; return a list of delivery errors (also logged), free of secrets."""
    category = "success" if ev["severity"] == "info" else ("overdue" if ev["event"] == "overdue" else "failure")
    if category not in cfg.on:
        return []
    errors = []
    for hook in cfg.webhooks:
        body = json.dumps(webhook_payload(hook.format, ev), ensure_ascii=False).encode()
        try:
            with urllib.request.urlopen(_webhook_request(hook.url, body), timeout=hook.timeout) as resp:
                resp.read()
        except Exception as e:  # noqa: BLE001 - any delivery failure is reported the same way
            label = redact_url(hook.url) if "://" in hook.url else "(malformed URL)"
            reason = getattr(e, "reason", e)
            detail = f"HTTP {e.code} {reason}" if isinstance(e, urllib.error.HTTPError) else str(reason)
            errors.append(_scrub(f"webhook {label}: {type(e).__name__}: {detail}", url_secrets(hook.url)))
    if cfg.email is not None:
        m = cfg.email
        msg = EmailMessage()
        msg["Subject"] = f"[backupkit] {ev['system']}: {ev['event']} ({ev['severity']})"
        msg["From"] = m.sender
        msg["To"] = ", ".join(m.to)
        msg.set_content(_text(ev) + "\n\n" + json.dumps(ev, ensure_ascii=False, indent=2))
        secrets: list[str] = []
        try:
            with smtplib.SMTP(m.host, m.port, timeout=m.timeout) as s:
                if m.starttls:
                    s.starttls()
                if m.user:
                    if m.password_file is None:
                        raise ValueError("notify.email.user is set but password_file is not")
                    check_private_mode(m.password_file, "SMTP password file")
                    password = m.password_file.read_text().strip()
                    # the password, and the AUTH PLAIN / LOGIN strings a server might echo in its error reply
                    secrets = [password] + [base64.b64encode(x.encode()).decode() for x in
                                            (password, f"\0{m.user}\0{password}", f"{m.user}\0{m.user}\0{password}")]
                    s.login(m.user, password)
                s.send_message(msg)
        except Exception as e:  # noqa: BLE001
            errors.append(_scrub(f"email via {m.host}:{m.port}: {type(e).__name__}: {e}", [x for x in secrets if len(x) >= 3]))
    for e in errors:
        logger.warning("notification not delivered: %s", e)
    return errors
