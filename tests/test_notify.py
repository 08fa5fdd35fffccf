"""Failure notifications reach a real HTTP endpoint and a real SMTP listener."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest


@pytest.fixture
def webhook():
    received = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}", received
    srv.shutdown()


def test_backup_failure_notifies_webhooks(workspace, webhook):
    url, received = webhook
    workspace.edit_config(lambda c: c.update(notify={"webhooks": [
        {"url": url + "/generic"}, {"url": url + "/cgi-bin/webhook/send?key=SECRET", "format": "wecom"},
        {"url": "http://127.0.0.1:9/unreachable?token=SECRET", "format": "slack", "timeout": 2}]}))
    workspace.db.unlink()
    r = workspace.run("backup", "demo-lis")
    assert r.code == 1, r
    paths = dict(received)
    assert paths["/generic"]["event"] == "backup failed" and paths["/generic"]["system"] == "demo-lis"
    wecom = paths["/cgi-bin/webhook/send?key=SECRET"]
    assert wecom["msgtype"] == "text" and "demo-lis" in wecom["text"]["content"]
    # the unreachable hook is reported without its token-bearing path
    assert "127.0.0.1:9" in r.err and "SECRET" not in r.err


def test_overdue_status_notifies(workspace, webhook):
    url, received = webhook
    workspace.edit_config(lambda c: c.update(notify={"webhooks": [{"url": url, "format": "dingtalk"}]}))
    assert workspace.run("status").code == 4
    assert received and "no backup yet" in received[0][1]["text"]["content"]


def test_drill_failure_emails_operator(workspace):
    from aiosmtpd.controller import Controller

    class Inbox:
        messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        workspace.edit_config(lambda c: c.update(notify={"email": {
            "host": "127.0.0.1", "port": port, "from": "backupkit@his.example", "to": ["it-oncall@his.example"]}}))
        workspace.edit_policy(lambda p: p["drill"]["assertions"].append(
            {"name": "impossible", "sql": "SELECT 0", "expect": "> 0"}))
        workspace.ok("backup", "demo-lis")
        assert workspace.run("drill", "demo-lis").code == 1
    finally:
        ctl.stop()
    (sender, rcpts, body), = inbox.messages
    assert sender == "backupkit@his.example" and rcpts == ["it-oncall@his.example"]
    assert "drill failed" in body and "impossible" in body
