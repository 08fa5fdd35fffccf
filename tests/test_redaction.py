"""Secrets never appear in logs, error messages, ledger records or evidence:
redact_url / redact_text, the log filter, notification errors, and the whole
CLI with a failing backup whose webhooks and SMTP server carry credentials."""

import base64
import io
import json
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from backupkit import log
from backupkit.config import NotifyConfig
from backupkit.errors import ConfigError, JobFailed
from backupkit.notify import event, send
from backupkit.redact import redact_text, redact_url, url_secrets


@pytest.mark.parametrize("url,expected", [
    # no secret: unchanged
    ("https://monitor.example.org/backupkit", "https://monitor.example.org/backupkit"),
    ("https://monitor.example.org:8443/a/b?x=1&format=json#top", "https://monitor.example.org:8443/a/b?x=1&format=json#top"),
    ("http://[::1]:8080/hook", "http://[::1]:8080/hook"),
    ("http://[2001:db8::7]/send-notification-hook-endpoint", "http://[2001:db8::7]/send-notification-hook-endpoint"),
    ("https://x.example/y?", "https://x.example/y?"),
    ("smtp://mail.example.org:587", "smtp://mail.example.org:587"),
    # userinfo
    ("https://user:token@host.example/path", "https://***@host.example/path"),
    ("https://user:token@host.example:8443/path", "https://***@host.example:8443/path"),
    ("https://TOKEN@host.example/", "https://***@host.example/"),
    ("http://u:p%40ss@[::1]:8080/hook", "http://***@[::1]:8080/hook"),
    ("http://u:pw@[fe80::1%25eth0]:80/", "http://***@[fe80::1%25eth0]:80/"),
    ("postgresql://backup:s3cret@db1:5433/his?sslmode=verify-full", "postgresql://***@db1:5433/his?sslmode=verify-full"),
    ("postgresql://backup:pa/ss@db1:5433/his", "postgresql://***@db1:5433/his"),  # unencoded '/' in the password
    ("postgresql://backup:p@ss@db1/his", "postgresql://***@db1/his"),  # unencoded '@' in the password
    ("mysql://root:pw@localhost:3306/db", "mysql://***@localhost:3306/db"),
    ("smtp://backupkit:pw@mail.example.org:587", "smtp://***@mail.example.org:587"),
    # token-like query (and fragment) parameters
    ("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4",
     "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***"),
    ("https://oapi.dingtalk.com/robot/send?access_token=abc123&timestamp=1700000000&sign=xyz%3D",
     "https://oapi.dingtalk.com/robot/send?access_token=***&timestamp=1700000000&sign=***"),
    ("https://h.example/x?token=t&secret=s&api_key=k&X-Amz-Signature=sig&format=json",
     "https://h.example/x?token=***&secret=***&api_key=***&X-Amz-Signature=***&format=json"),
    ("postgresql://db1/his?user=backup&password=pw", "postgresql://db1/his?user=backup&password=***"),
    ("http://[::1]:9/unreachable?token=SECRET", "http://[::1]:9/unreachable?token=***"),
    ("https://app.example/cb#access_token=zz&state=1", "https://app.example/cb#access_token=***&state=1"),
    ("https://h.example/x?token=", "https://h.example/x?token="),
    # tokens in the path
    ("https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX", "https://hooks.slack.com/services/T000/B000/***"),
    ("https://hooks.slack.com/services/T000/B000/short", "https://hooks.slack.com/services/T000/B000/***"),
    ("https://open.feishu.cn/open-apis/bot/v2/hook/abc", "https://open.feishu.cn/open-apis/bot/v2/hook/***"),
    ("https://discord.com/api/webhooks/1234/tok", "https://discord.com/api/webhooks/1234/***"),
    ("https://api.telegram.org/bot123456:ABC-def_ghi/sendMessage", "https://api.telegram.org/bot***/sendMessage"),
    ("https://ntfy.example/hooks/0123456789abcdefABCDEF/send", "https://ntfy.example/hooks/***/send"),
    ("https://x.example/f3b4a1e2-5c6d-4e7f-8a9b-0c1d2e3f4a5b", "https://x.example/***"),
    # all at once, and idempotence
    ("https://u:p@hooks.slack.com/services/T0/B0/Zz9?token=t", "https://***@hooks.slack.com/services/T0/B0/***?token=***"),
    ("https://***@host.example/***?token=***", "https://***@host.example/***?token=***"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected
    assert redact_url(expected) == expected


@pytest.mark.parametrize("text,expected", [
    ("nothing to hide at 127.0.0.1:5432 database his", "nothing to hide at 127.0.0.1:5432 database his"),
    ("webhook https://u:tok@h.example/x?key=K1: URLError", "webhook https://***@h.example/x?key=***: URLError"),
    ("(see http://[::1]:80/a?token=t).", "(see http://[::1]:80/a?token=***)."),
    ("at <http://[::1]:80>, then", "at <http://[::1]:80>, then"),
    ("two: smtp://a:b@mail:25 and 'postgresql://u:pw@db/his'", "two: smtp://***@mail:25 and 'postgresql://***@db/his'"),
    ("DSN \"mysql://root:pw@localhost/db\" refused", "DSN \"mysql://***@localhost/db\" refused"),
    ("host=db1 port=5432 user=backup password=s3cret dbname=his", "host=db1 port=5432 user=backup password=*** dbname=his"),
    ("host=db1 password = 'se cr\\'et' dbname=his", "host=db1 password = *** dbname=his"),
    ("PGPASSWORD=s3cret pg_dump his", "PGPASSWORD=*** pg_dump his"),
    ("MYSQL_PWD=x sslpassword=y client_secret=z", "MYSQL_PWD=*** sslpassword=*** client_secret=***"),
    ("password_file=/etc/backupkit/his.pass password_env=HIS_PW", "password_file=/etc/backupkit/his.pass password_env=HIS_PW"),
    ("", ""),
])
def test_redact_text(text, expected):
    assert redact_text(text) == expected
    assert redact_text(expected) == expected


def test_url_secrets_lists_what_to_scrub():
    assert set(url_secrets("https://hookuser:tok%2Fen@h.example/x?access_token=abc&x=1")) == {
        "hookuser:tok%2Fen", "tok%2Fen", "tok/en", "abc"}
    assert url_secrets("https://monitor.example.org/backupkit?format=json") == []


def test_backupkit_error_str_is_redacted():
    e = JobFailed("policy his: cannot connect to postgresql://backup:s3cret@db1/his\n(password=s3cret)")
    assert str(e) == "policy his: cannot connect to postgresql://***@db1/his (password=***)"
    assert "s3cret" not in str(ConfigError("bad url https://x.example/send?access_token=s3cret"))


@pytest.fixture
def logging_to(tmp_path, monkeypatch):
    """log.setup() writing its human lines into a buffer and its JSON lines into a file."""
    stderr, path = io.StringIO(), tmp_path / "log.jsonl"
    monkeypatch.setattr(sys, "stderr", stderr)
    log.setup(False, path)
    yield stderr, path
    root = logging.getLogger("backupkit")
    for h in root.handlers:
        h.close()
        if isinstance(h, log.JsonLines):
            h.f.close()
    root.handlers.clear()


def test_log_filter_redacts_message_args_and_traceback(logging_to):
    stderr, path = logging_to
    logger = logging.getLogger("backupkit.anything")
    logger.warning("posting to %s failed (%s)", "https://u:S3CRET-A@h.example/x?token=S3CRET-B", "password=S3CRET-C")
    try:
        raise ValueError("unknown url https://u:S3CRET-D@h.example/")
    except ValueError:
        logger.error("boom", exc_info=True)
    err = stderr.getvalue()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert "https://***@h.example/x?token=*** failed (password=***)" in err
    assert lines[0]["message"] == "posting to https://***@h.example/x?token=*** failed (password=***)"
    assert "ValueError: unknown url https://***@h.example/" in err
    assert "S3CRET" not in err and "S3CRET" not in path.read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def failing_webhook():
    """A real HTTP server that records each request and answers 500."""
    received = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers.get("Authorization")))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_port, received
    srv.shutdown()


def test_webhook_errors_carry_no_secret(failing_webhook):
    port, received = failing_webhook
    dead = _free_port()
    cfg = NotifyConfig(webhooks=[
        {"url": f"http://hookuser:USERINFO-S3CRET@127.0.0.1:{port}/hook?access_token=QUERY-S3CRET&x=1"},
        {"url": f"http://hookuser:USERINFO-S3CRET@127.0.0.1:{dead}/hook?key=QUERY-S3CRET", "timeout": 2},
        {"url": "http://hookuser:USERINFO-S3CRET@localhost/hook", "timeout": 2},  # no port: http.client would quote 'S3CRET@localhost'
        {"url": "hookuser:USERINFO-S3CRET@localhost/hook"},  # not a URL at all
    ])
    errors = send(cfg, event("backup failed", "his", "boom"))
    assert len(errors) == 4
    assert errors[0] == f"webhook http://***@127.0.0.1:{port}/hook?access_token=***&x=1: HTTPError: HTTP 500 Internal Server Error"
    assert errors[1].startswith(f"webhook http://***@127.0.0.1:{dead}/hook?key=***: URLError: ") and "refused" in errors[1]
    assert "(malformed URL)" in errors[3]
    assert not any("S3CRET" in e for e in errors)
    # the userinfo went to the server as Basic auth, not in the request line
    path, auth = received[0]
    assert path == "/hook?access_token=QUERY-S3CRET&x=1"
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"hookuser:USERINFO-S3CRET"


SECRETS = ["USERINFO-S3CRET", "QUERY-S3CRET", "PATH0S3CRET0abcdefghijklmnop", "DING-S3CRET", "SMTP-PASSWORD-S3CRET"]


@pytest.fixture
def smtp_refusing_auth():
    """A real SMTP listener offering AUTH (without TLS) and refusing every login."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    class Inbox:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    port = _free_port()
    ctl = Controller(Inbox(), hostname="127.0.0.1", port=port, auth_require_tls=False,
                     authenticator=lambda *a: AuthResult(success=False, handled=False))
    ctl.start()
    yield port
    ctl.stop()


@pytest.mark.parametrize("verbose", [False, True])
def test_failed_backup_leaks_no_secret_anywhere(workspace, failing_webhook, smtp_refusing_auth, tmp_path, verbose):
    port, received = failing_webhook
    dead = _free_port()
    pw = tmp_path / "smtp.pass"
    pw.write_text("SMTP-PASSWORD-S3CRET\n")
    pw.chmod(0o600)
    workspace.edit_config(lambda c: c.update(notify={
        "webhooks": [
            {"url": f"http://hookuser:USERINFO-S3CRET@127.0.0.1:{port}/hook?access_token=QUERY-S3CRET"},
            {"url": f"http://hookuser:USERINFO-S3CRET@127.0.0.1:{dead}/cgi-bin/webhook/send?key=QUERY-S3CRET",
             "format": "wecom", "timeout": 2},
            {"url": f"http://127.0.0.1:{dead}/robot/send?access_token=DING-S3CRET&sign=DING-S3CRET",
             "format": "dingtalk", "timeout": 2},
            {"url": f"http://127.0.0.1:{dead}/services/T0/B0/PATH0S3CRET0abcdefghijklmnop", "format": "slack",
             "timeout": 2},
        ],
        "email": {"host": "127.0.0.1", "port": smtp_refusing_auth, "user": "backupkit", "password_file": str(pw),
                  "from": "backupkit@his.example", "to": ["it-oncall@his.example"], "timeout": 5},
    }))
    workspace.db.unlink()
    log_json = tmp_path / "log.jsonl"
    r = workspace.run(*(["-v"] if verbose else []), "--log-json", str(log_json), "backup", "demo-lis")
    assert r.code == 1, r

    # the failures were real: the 500 server was reached with the credentials, the others refused
    assert received and received[0][0] == "/hook?access_token=QUERY-S3CRET" and received[0][1].startswith("Basic ")
    assert f"webhook http://***@127.0.0.1:{port}/hook?access_token=***: HTTPError: HTTP 500" in r.err
    assert f"webhook http://***@127.0.0.1:{dead}/cgi-bin/webhook/send?key=***: URLError" in r.err
    assert f"127.0.0.1:{dead}/services/T0/B0/***" in r.err and "SMTPAuthenticationError" in r.err
    logged = log_json.read_text()
    assert "HTTPError" in logged and "SMTPAuthenticationError" in logged

    out = tmp_path / "evidence"
    workspace.ok("evidence", "export", "--out", str(out), "--lang", "en")
    evidence = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert evidence
    ledger = {p: p.read_bytes() for p in workspace.ledger.parent.glob(workspace.ledger.name + "*")}
    assert ledger
    places = {"stdout": r.out.encode(), "stderr": r.err.encode(), str(log_json): logged.encode(), **evidence, **ledger}
    for secret in SECRETS:
        for forms in (secret, base64.b64encode(secret.encode()).decode()):
            for where, data in places.items():
                assert forms.encode() not in data, f"{forms} found in {where}"
