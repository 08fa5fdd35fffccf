"""``backupkit targets trust NAME``: record an SFTP target's host key in its known_hosts.

The SFTP target never trusts a key on first use; this is the one place a key
is added, after an operator has compared the fingerprint with the server's
(``ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`` on the server).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import paramiko
from paramiko.hostkeys import HostKeyEntry

from ..errors import ConfigError
from ..targets.sftp import fetch_host_key, fingerprint, hostkey_name, load_known_hosts

logger = logging.getLogger(__name__)


def trust(name: str, cfg, *, confirm: Callable[[str], bool], dry_run: bool = False) -> str:
    """Given an SFTP target's name and config, fetch the server's host key without
    trusting it, ask ``confirm(question)`` and, if it returns True, write the key
    to ``cfg.known_hosts`` (replacing a different key recorded for that host).

    Returns a one-line summary. Raises ConfigError when the target is not SFTP
    or the operator declines (nothing is written then), JobFailed when the
    server cannot be reached.
    """
    if getattr(cfg, "type", None) != "sftp":
        raise ConfigError(f"target {name} is not an sftp target; only SSH host keys can be trusted")
    what = f"target {name}"
    host = hostkey_name(cfg.host, cfg.port)
    key = fetch_host_key(cfg, what)
    seen = f"{key.get_name()} {fingerprint(key)}"
    known = load_known_hosts(cfg.known_hosts, what)
    entries = known.lookup(host)
    ours = entries.get(key.get_name()) if entries else None
    if ours == key:
        return f"{what}: {host} is already trusted ({seen}) in {cfg.known_hosts}"
    if entries:
        old = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in entries.values())
        question = (
            f"WARNING: the host key of {host} CHANGED. known_hosts {cfg.known_hosts} has {old}; "
            f"the server now offers {seen}. Replace it only if the server was re-keyed. Trust the new key?"
        )
    else:
        question = f"{host} offers host key {seen}. Does this match the server's key? Trust it?"
    if not confirm(question):
        raise ConfigError(f"{what}: host key {seen} of {host} not trusted; nothing was written to {cfg.known_hosts}")
    if dry_run:
        return f"{what}: would add {host} {seen} to {cfg.known_hosts} (dry run)"
    _write_entry(Path(cfg.known_hosts), host, key)
    logger.info("%s: trusted %s %s in %s", what, host, seen, cfg.known_hosts)
    return f"{what}: trusted {host} {seen}; added to {cfg.known_hosts}"


def _write_entry(path: Path, host: str, key: paramiko.PKey) -> None:
    """Drop any lines for ``host`` (plain or hashed) and append ``host type base64``."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o755)
    kept: list[str] = []
    if path.exists():
        for line in path.read_text().splitlines(keepends=True):
            entry = HostKeyEntry.from_line(line) if line.strip() and not line.lstrip().startswith("#") else None
            if entry is not None and any(_names_match([n], host) for n in entry.hostnames):
                others = [n for n in entry.hostnames if not _names_match([n], host)]
                if others:  # keep the line for the other names it lists
                    kept.append(HostKeyEntry(others, entry.key).to_line())
                continue
            kept.append(line if line.endswith("\n") else line + "\n")
    kept.append(f"{host} {key.get_name()} {key.get_base64()}\n")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.writelines(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _names_match(names: list[str], host: str) -> bool:
    for n in names:
        if n == host:
            return True
        if n.startswith("|1|") and paramiko.HostKeys.hash_host(host, n) == n:
            return True
    return False
