"""The SFTP offsite target: stores keys under ``path`` on an SSH server (paramiko).

It owns the SSH connection: host-key checking against the configured
known_hosts file only (never auto-add), public-key auth with the configured
key file only (no agent, no ~/.ssh), fast transfers (AES-GCM preferred,
pipelined writes of the server's maximum request size, large windows),
resumable ``.partial`` uploads, remote SHA-256 verification (``sha256sum``
over an exec channel, or a streamed read-back) and atomic rename into place.

Retries and bandwidth limits are not here: they are wrappers
(``targets/wrappers.py``) around any target.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import logging
import posixpath
import queue
import shlex
import socket
import stat as stat_mod
import threading
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

import paramiko
from paramiko.sftp import CMD_DATA, CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_READ, CMD_STATUS, int64

from ..config import SftpTargetConfig
from ..errors import BackupkitError, ConfigError, JobFailed, TransientError, VerificationFailed
from ..keys import check_private_mode
from .base import Blob, PutResult, Target

logger = logging.getLogger(__name__)

PARTIAL = ".partial"
# Preferred first when the server offers them: AES-GCM needs no separate MAC
# pass and is the fastest cipher paramiko has (BENCHMARKS.md).
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# server→client window and packet size: large, so read-back is not stalled by
# window adjustments. (client→server limits are the server's to choose.)
WINDOW_SIZE = 32 << 20
MAX_PACKET_SIZE = 256 << 10
# SFTP read/write request size when the server does not say (the protocol's
# guaranteed minimum); OpenSSH says 255 KiB through limits@openssh.com.
DEFAULT_REQUEST = 32768
MAX_REQUEST = 255 << 10
LOCAL_CHUNK = 1 << 20
# How much of an existing .partial's tail is compared with the local file
# before resuming; the final full-file hash catches anything earlier.
RESUME_CHECK = 1 << 20
PIPELINE_DEPTH = 64  # read requests in flight: bounds read memory to ~16 MiB
IN_FLIGHT_WRITES = 64  # unacknowledged write requests (~16 MiB); errors surface within that
EXEC_UNAVAILABLE = {126, 127}


def hostkey_name(host: str, port: int) -> str:
    """The known_hosts name OpenSSH uses: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:<base64, no padding>`` of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def load_known_hosts(path: Path, what: str) -> paramiko.HostKeys:
    """Parse a known_hosts file (plain and hashed entries); a missing file is empty."""
    keys = paramiko.HostKeys()
    try:
        keys.load(str(path))
    except FileNotFoundError:
        pass
    except PermissionError:
        raise ConfigError(f"{what}: known_hosts {path} is not readable by this user; fix its owner") from None
    except Exception as e:  # paramiko raises various types on malformed lines
        raise ConfigError(f"{what}: known_hosts {path} cannot be parsed ({type(e).__name__}); fix or recreate it") from None
    return keys


def open_transport(cfg: SftpTargetConfig, what: str, known: paramiko.HostKeys | None = None) -> paramiko.Transport:
    """Connect and run the SSH handshake (no host-key decision, no auth yet).

    ``known`` (entries for this host) orders host-key algorithms so the server
    presents the key type we already trust. Every step is bounded by
    ``cfg.timeout``. Raises JobFailed naming host:port when unreachable.
    """
    hp = f"{cfg.host}:{cfg.port}"
    try:
        sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.timeout)
    except socket.gaierror as e:
        raise JobFailed(f"{what}: cannot resolve host {cfg.host} ({e.strerror}); check 'host' in the config") from None
    except OSError as e:
        reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or type(e).__name__)
        raise TransientError(f"{what}: cannot reach {hp} ({reason}); check host, port, firewall and that sshd runs") from None
    t = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
    t.banner_timeout = cfg.timeout
    t.handshake_timeout = cfg.timeout
    t.auth_timeout = cfg.timeout
    t.channel_timeout = cfg.timeout
    opts = t.get_security_options()
    supported = list(opts.ciphers)
    opts.ciphers = [c for c in PREFERRED_CIPHERS if c in supported] + [c for c in supported if c not in PREFERRED_CIPHERS]
    entries = known.lookup(hostkey_name(cfg.host, cfg.port)) if known is not None else None
    if entries:
        wanted: list[str] = []
        for kt in entries.keys():
            wanted += ["rsa-sha2-512", "rsa-sha2-256"] if kt == "ssh-rsa" else [kt]
        types = list(opts.key_types)
        opts.key_types = [k for k in wanted if k in types] + [k for k in types if k not in wanted]
    try:
        t.start_client(timeout=cfg.timeout)
    except (paramiko.SSHException, EOFError, OSError) as e:
        t.close()
        raise TransientError(f"{what}: SSH handshake with {hp} failed ({_reason(e)}); check that {hp} is an SSH server") from None
    return t


def fetch_host_key(cfg: SftpTargetConfig, what: str) -> paramiko.PKey:
    """The host key the server presents, without trusting it or authenticating."""
    known = load_known_hosts(cfg.known_hosts, what)
    t = open_transport(cfg, what, known)
    try:
        return t.get_remote_server_key()
    finally:
        t.close()


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _load_private_key(path: Path, what: str) -> paramiko.PKey:
    check_private_mode(path, f"{what}: SSH key_file")
    try:
        return paramiko.PKey.from_path(str(path))
    except paramiko.PasswordRequiredException:
        raise ConfigError(
            f"{what}: SSH key_file {path} is passphrase-protected; backupkit runs unattended and needs an unencrypted key (mode 0600)"
        ) from None
    except (paramiko.SSHException, ValueError, OSError, UnicodeError):
        raise ConfigError(f"{what}: SSH key_file {path} is not an OpenSSH/PEM private key") from None


class _Responses:
    """Collects answers to our own pipelined SFTP requests (paramiko hands them here by number)."""

    def __init__(self):
        self.got: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, t: int, msg: paramiko.Message, num: int) -> None:
        self.got[num] = (t, msg)


def read_pipelined(sftp: paramiko.SFTPClient, f: paramiko.SFTPFile, start: int, end: int, request: int) -> Iterator[bytes]:
    """Yield the bytes of ``f`` from ``start`` to ``end`` in order, keeping
    PIPELINE_DEPTH read requests in flight.

    paramiko's own ``prefetch`` runs a thread that polls with 10 ms sleeps once
    its request limit is reached, which stalls a fast link; this keeps the pipe
    full from the reading thread itself and bounds memory to depth x request.
    """
    answers = _Responses()
    pending: deque[tuple[int, int, int]] = deque()
    offset = start
    try:
        while pending or offset < end:
            while len(pending) < PIPELINE_DEPTH and offset < end:
                n = min(request, end - offset)
                num = sftp._async_request(answers, CMD_READ, f.handle, int64(offset), int(n))
                pending.append((num, offset, n))
                offset += n
            num, at, n = pending.popleft()
            while num not in answers.got:
                sftp._read_response()
            t, msg = answers.got.pop(num)
            if t == CMD_STATUS:
                sftp._convert_status(msg)  # raises (EOFError when the file shrank)
            if t != CMD_DATA:
                raise paramiko.SFTPError("expected data in reply to a read")
            data = msg.get_string()
            while len(data) < n:  # a short read (server limit): fetch the rest synchronously
                t, msg = sftp._request(CMD_READ, f.handle, int64(at + len(data)), int(n - len(data)))
                if t != CMD_DATA:
                    raise paramiko.SFTPError("expected data in reply to a read")
                more = msg.get_string()
                if not more:
                    raise EOFError(f"file ended at byte {at + len(data)}")
                data += more
            yield data
    finally:
        # Drain answers still in flight so the session stays usable.
        while pending:
            num, _, _ = pending.popleft()
            try:
                while num not in answers.got:
                    sftp._read_response()
            except Exception:
                break
            answers.got.pop(num, None)


class _Hasher:
    """SHA-256 on a second thread: hashlib releases the GIL, so it overlaps with
    the Python work of receiving the next chunks."""

    def __init__(self):
        self._h = hashlib.sha256()
        self._q: queue.Queue = queue.Queue(maxsize=16)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        self.n = 0

    def _run(self):
        while (b := self._q.get()) is not None:
            self._h.update(b)

    def update(self, b: bytes) -> None:
        self.n += len(b)
        self._q.put(b)

    def hexdigest(self) -> str:
        self._q.put(None)
        self._t.join()
        return self._h.hexdigest()

    def abandon(self) -> None:
        if self._t.is_alive():
            self._q.put(None)


class _RemoteReader:
    """A streamed, pipelined read of one remote file; translates errors."""

    def __init__(self, target: "SftpTarget", sftp: paramiko.SFTPClient, f: paramiko.SFTPFile, path: str, size: int):
        self._target, self._f, self._path = target, f, path
        self._chunks = read_pipelined(sftp, f, 0, size, target._read_size)
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        with self._target._errors("reading", self._path):
            if n is None or n < 0:
                rest = [self._buf, *self._chunks]
                self._buf = b""
                return b"".join(rest)
            while len(self._buf) < n:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._buf = chunk if not self._buf else self._buf + chunk
            out, self._buf = self._buf[:n], self._buf[n:]
            return out

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        try:
            self._chunks.close()
            self._f.close()
        except Exception:  # closing after a dropped connection is not an error
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SftpTarget(Target):
    """Files under ``cfg.path`` on an SSH server, reached with SFTP.

    The connection is opened on first use and re-opened when it has dropped,
    so a caller (RetryTarget) may simply call a method again after a failure.
    """

    def __init__(self, name: str, cfg: SftpTargetConfig):
        self.name = name
        self.cfg = cfg
        self.base = cfg.path.rstrip("/") or "/"
        self._hp = f"{cfg.host}:{cfg.port}"
        self._what = f"target {name}"
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._read_size = DEFAULT_REQUEST
        self._write_size = DEFAULT_REQUEST
        self._exec_ok: bool | None = None  # None: not tried on this connection
        self._dirs: set[str] = set()

    def describe(self) -> str:
        return f"sftp {self.cfg.user}@{self._hp}{'' if self.base.startswith('/') else ':'}{self.base}"

    # -- connection -------------------------------------------------------------

    def _connect(self) -> None:
        cfg, what = self.cfg, self._what
        pkey = _load_private_key(cfg.key_file, what)
        known = load_known_hosts(cfg.known_hosts, what)
        t = open_transport(cfg, what, known)
        try:
            server_key = t.get_remote_server_key()
            name = hostkey_name(cfg.host, cfg.port)
            entries = known.lookup(name)
            seen = f"{server_key.get_name()} {fingerprint(server_key)}"
            if not entries:
                raise ConfigError(
                    f"{what}: the host key of {self._hp} is not in known_hosts {cfg.known_hosts} (server offered {seen}); "
                    f"if that fingerprint is right, run `backupkit targets trust {self.name}`"
                )
            ours = entries.get(server_key.get_name())
            if ours != server_key:
                had = ours or next(iter(entries.values()))
                raise ConfigError(
                    f"{what}: HOST KEY CHANGED for {self._hp}: known_hosts {cfg.known_hosts} has {had.get_name()} "
                    f"{fingerprint(had)} but the server offered {seen}; nothing was sent. If the server was really "
                    f"re-keyed, check the new fingerprint with its admin and run `backupkit targets trust {self.name}`"
                )
            try:
                remaining = t.auth_publickey(cfg.user, pkey)
            except paramiko.AuthenticationException:
                raise JobFailed(
                    f"{what}: {cfg.user}@{self._hp} refused the key in {cfg.key_file}; check 'user' and that its "
                    f"public key is in that user's authorized_keys on the server"
                ) from None
            except (paramiko.SSHException, EOFError, OSError) as e:
                raise TransientError(f"{what}: authentication with {cfg.user}@{self._hp} failed ({_reason(e)})") from None
            if remaining:
                raise JobFailed(
                    f"{what}: {cfg.user}@{self._hp} requires more authentication ({', '.join(remaining)}); "
                    f"backupkit only uses the key file; allow publickey alone for this user"
                )
            try:
                sftp = paramiko.SFTPClient.from_transport(t, window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE)
            except (paramiko.SSHException, EOFError, OSError) as e:
                raise JobFailed(
                    f"{what}: {self._hp} did not start the SFTP subsystem ({_reason(e)}); enable 'Subsystem sftp' in its sshd_config"
                ) from None
        except BaseException:
            t.close()
            raise
        sftp.get_channel().settimeout(max(cfg.timeout, 60.0))
        self._transport, self._sftp = t, sftp
        self._read_size, self._write_size = self._request_limits(sftp)
        self._exec_ok = None
        self._dirs = set()
        logger.info(
            "%s: connected to %s as %s (cipher %s, read %d / write %d bytes per request)",
            what, self._hp, cfg.user, t.local_cipher, self._read_size, self._write_size,
        )

    @staticmethod
    def _request_limits(sftp: paramiko.SFTPClient) -> tuple[int, int]:
        """Largest read/write the server accepts (limits@openssh.com), else the safe minimum."""
        try:
            t, msg = sftp._request(CMD_EXTENDED, "limits@openssh.com")
            if t != CMD_EXTENDED_REPLY:
                return DEFAULT_REQUEST, DEFAULT_REQUEST
            msg.get_int64()  # max packet length
            read, write = msg.get_int64(), msg.get_int64()
        except (IOError, paramiko.SSHException, EOFError):
            return DEFAULT_REQUEST, DEFAULT_REQUEST
        pick = lambda n: max(DEFAULT_REQUEST, min(n or DEFAULT_REQUEST, MAX_REQUEST))  # noqa: E731
        return pick(read), pick(write)

    def _client(self) -> paramiko.SFTPClient:
        if self._sftp is None or self._transport is None or not self._transport.is_active():
            self.close()
            self._connect()
        assert self._sftp is not None
        return self._sftp

    def close(self) -> None:
        sftp, t = self._sftp, self._transport
        self._sftp = self._transport = None
        for thing in (sftp, t):
            if thing is not None:
                try:
                    thing.close()
                except Exception:
                    pass

    # -- errors -----------------------------------------------------------------

    @contextmanager
    def _errors(self, doing: str, path: str) -> Iterator[None]:
        """Turn paramiko/OS errors into one-line JobFailed naming target, host and path."""
        where = f"{path} on {self._hp}"
        try:
            yield
        except BackupkitError:
            raise
        except PermissionError:
            raise JobFailed(
                f"{self._what}: permission denied {doing} {where}; make {posixpath.dirname(path) or path} "
                f"writable by {self.cfg.user} on the server (or fix 'path' in the config)"
            ) from None
        except FileNotFoundError:
            raise JobFailed(f"{self._what}: {where} does not exist ({doing})") from None
        except (paramiko.SSHException, paramiko.SFTPError, EOFError, OSError) as e:
            alive = self._transport is not None and self._transport.is_active()
            if alive and type(e) in (IOError, OSError) and e.errno is None:
                # SFTP "Failure": OpenSSH maps ENOSPC, EROFS, EDQUOT... to this one code.
                self._raise_failure(doing, where, e)
            self.close()
            raise TransientError(
                f"{self._what}: connection to {self._hp} lost while {doing} {path} ({_reason(e)}); "
                f"run the command again: uploads resume from the .partial file"
            ) from None

    def _raise_failure(self, doing: str, where: str, e: BaseException) -> None:
        raise JobFailed(
            f"{self._what}: the server failed {doing} {where} ({_reason(e)}); the remote filesystem is probably full, "
            f"over quota or read-only: free space under {self.base} (df -h on the server) and run the command again"
        ) from None

    # -- paths ------------------------------------------------------------------

    def _path(self, key: str) -> str:
        norm = posixpath.normpath(key)
        if not key or key.startswith("/") or norm.startswith("..") or norm == ".":
            raise ValueError(f"target key {key!r} must be a relative path inside the target")
        return posixpath.join(self.base, norm)

    def _makedirs(self, sftp: paramiko.SFTPClient, directory: str) -> None:
        if directory in self._dirs:
            return
        missing = []
        d = directory
        while d not in ("", "/"):
            try:
                if not stat_mod.S_ISDIR(sftp.stat(d).st_mode or 0):
                    raise JobFailed(f"{self._what}: {d} on {self._hp} exists but is not a directory; move it away")
                break
            except FileNotFoundError:
                missing.append(d)
                d = posixpath.dirname(d)
        for d in reversed(missing):
            try:
                sftp.mkdir(d)
            except IOError as e:
                try:  # a concurrent mkdir is fine
                    if stat_mod.S_ISDIR(sftp.stat(d).st_mode or 0):
                        continue
                except IOError:
                    pass
                raise e
        self._dirs.add(directory)

    # -- hashing ------------------------------------------------------------------

    def _remote_sha256sum(self, path: str, size: int) -> str | None:
        """SHA-256 by running ``sha256sum`` on the server; None if exec is not available."""
        if self._exec_ok is False:
            return None
        t = self._transport
        assert t is not None
        try:
            chan = t.open_session(timeout=self.cfg.timeout)
        except (paramiko.ChannelException, paramiko.SSHException) as e:
            logger.info("%s: exec channel refused by %s (%s); using read-back", self._what, self._hp, _reason(e))
            self._exec_ok = False
            return None
        try:
            # Hashing takes time proportional to size; allow a slow disk (20 MB/s).
            chan.settimeout(max(self.cfg.timeout, size / 20e6 + self.cfg.timeout))
            try:
                chan.exec_command("sha256sum -- " + shlex.quote(path))
            except paramiko.SSHException as e:
                logger.info("%s: %s refused exec (%s); using read-back", self._what, self._hp, _reason(e))
                self._exec_ok = False
                return None
            chan.shutdown_write()  # a ForceCommand internal-sftp sees EOF and exits
            out, err = bytearray(), bytearray()
            while True:
                data = chan.recv(65536)
                if not data:
                    break
                out += data
            status = chan.recv_exit_status()
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
        finally:
            chan.close()
        token = bytes(out).split(b" ", 1)[0].lstrip(b"\\").decode("ascii", "replace").strip()
        if status in EXEC_UNAVAILABLE or (status == 0 and not _is_hex64(token)):
            logger.info("%s: sha256sum is not usable on %s (exit %s); using read-back", self._what, self._hp, status)
            self._exec_ok = False
            return None
        msg = bytes(err).decode("utf-8", "replace").strip().splitlines()
        if status != 0 and not any("sha256sum" in m for m in msg):
            # Not sha256sum speaking (e.g. ForceCommand internal-sftp ran instead).
            logger.info("%s: exec on %s did not run sha256sum (exit %s); using read-back", self._what, self._hp, status)
            self._exec_ok = False
            return None
        if status != 0:
            if any("No such file" in m for m in msg):
                raise FileNotFoundError(errno.ENOENT, path)
            if any("Permission denied" in m for m in msg):
                raise PermissionError(errno.EACCES, path)
            raise JobFailed(f"{self._what}: sha256sum of {path} on {self._hp} failed: {msg[-1] if msg else 'exit ' + str(status)}")
        self._exec_ok = True
        return token.lower()

    def _read_back_sha256(self, sftp: paramiko.SFTPClient, path: str) -> tuple[str, int]:
        """Hash the remote file by streaming it back (pipelined reads, hashing on a second thread)."""
        h = _Hasher()
        try:
            with sftp.open(path, "rb") as f:
                size = f.stat().st_size or 0
                for chunk in read_pipelined(sftp, f, 0, size, self._read_size):
                    h.update(chunk)
        except BaseException:
            h.abandon()
            raise
        return h.hexdigest(), h.n

    def _hash(self, sftp: paramiko.SFTPClient, path: str, size: int) -> tuple[str, str]:
        method = self.cfg.verify
        if method in ("auto", "remote-sha256sum"):
            digest = self._remote_sha256sum(path, size)
            if digest is not None:
                return digest, "remote-sha256sum"
            if method == "remote-sha256sum":
                raise JobFailed(
                    f"{self._what}: verify is 'remote-sha256sum' but {self._hp} cannot run sha256sum for {self.cfg.user}; "
                    f"set verify: read-back (or auto) for this target"
                )
        digest, _ = self._read_back_sha256(sftp, path)
        return digest, "read-back"

    # -- the Target contract --------------------------------------------------------

    def put(self, key: str, blob: Blob) -> PutResult:
        path = self._path(key)
        partial = path + PARTIAL
        with self._errors("checking", path):
            sftp = self._client()
            existing = self._stat(sftp, path)
            if existing == blob.size:
                digest, method = self._hash(sftp, path, blob.size)
                if digest == blob.sha256:
                    logger.info("%s: %s already stored and verified (%s); nothing sent", self._what, key, method)
                    return PutResult(key, blob.size, blob.sha256, method, bytes_sent=0)
                logger.warning("%s: %s exists with a different hash; uploading it again", self._what, key)
            self._makedirs(sftp, posixpath.dirname(path))
        with self._errors("uploading to", partial):
            offset = self._resume_offset(sftp, partial, blob)
        sent = 0
        while True:
            with self._errors("uploading to", partial):
                sent += self._upload(sftp, partial, blob, offset)
            with self._errors("verifying", partial):
                digest, method = self._hash(sftp, partial, blob.size)
            if digest == blob.sha256:
                break
            with self._errors("removing", partial):
                self._remove_quietly(sftp, partial)
            if offset == 0:
                raise VerificationFailed(
                    f"{self._what}: {key} on {self._hp} has SHA-256 {digest[:16]}... after upload, expected "
                    f"{blob.sha256[:16]}... ({method}); the partial upload was deleted. Run the copy again; if it recurs, "
                    f"check the local backup (backupkit verify) and the server's disk"
                )
            # The resumed prefix was bad somewhere before the tail we checked: start over once.
            logger.warning("%s: resumed upload of %s did not verify; uploading from the start", self._what, key)
            offset = 0
        resumed_from = offset
        with self._errors("renaming into place", path):
            self._rename(sftp, partial, path)
        logger.info(
            "%s: stored %s (%d bytes, %d sent, resumed from %d, verified by %s)",
            self._what, key, blob.size, sent, resumed_from, method,
        )
        return PutResult(key, blob.size, blob.sha256, method, bytes_sent=sent, resumed_from=resumed_from)

    def _rename(self, sftp: paramiko.SFTPClient, src: str, dst: str) -> None:
        """Atomic rename over ``dst`` (posix-rename@openssh.com); servers without it
        get remove + rename, which is safe because ``src`` is already verified."""
        try:
            sftp.posix_rename(src, dst)
        except IOError as e:
            if e.errno is not None or "unsupported" not in str(e).lower():
                raise
            logger.info("%s: %s has no posix-rename; replacing %s non-atomically", self._what, self._hp, dst)
            self._remove_quietly(sftp, dst)
            sftp.rename(src, dst)

    def _resume_offset(self, sftp: paramiko.SFTPClient, partial: str, blob: Blob) -> int:
        """Where to continue an earlier upload: the .partial's size if its tail matches the local file."""
        have = self._stat(sftp, partial)
        if not have:
            return 0
        if have > blob.size:
            logger.info("%s: %s is longer than the blob; starting over", self._what, partial)
            return 0
        n = min(RESUME_CHECK, have)
        with sftp.open(partial, "rb") as f:
            remote = b"".join(read_pipelined(sftp, f, have - n, have, self._read_size))
        try:
            with open(blob.path, "rb") as local:  # comparing, not uploading: no rate limit
                local.seek(have - n)
                ok = local.read(n) == remote
        except OSError as e:
            raise JobFailed(f"{self._what}: cannot read local file {blob.path} ({_reason(e)})") from None
        if not ok:
            logger.warning("%s: %s does not match the local file; starting over", self._what, partial)
            return 0
        logger.info("%s: resuming %s at byte %d of %d", self._what, partial, have, blob.size)
        return have

    def _upload(self, sftp: paramiko.SFTPClient, partial: str, blob: Blob, offset: int) -> int:
        """Write the blob from ``offset`` into ``partial`` (pipelined); returns bytes sent."""
        sent = 0
        try:
            src = blob.open(offset)
        except OSError as e:
            raise JobFailed(f"{self._what}: cannot read local file {blob.path} ({_reason(e)})") from None
        with src:
            # "r+" keeps the verified prefix; "w" truncates a fresh or rejected one.
            f = sftp.open(partial, "r+b" if offset else "wb", bufsize=LOCAL_CHUNK)
            try:
                f.MAX_REQUEST_SIZE = self._write_size
                f.set_pipelined(True)
                if offset:
                    f.seek(offset)
                while True:
                    data = src.read(LOCAL_CHUNK)
                    if not data:
                        break
                    f.write(data)
                    sent += len(data)
                    _collect_write_acks(sftp, f, keep=IN_FLIGHT_WRITES)
                f.flush()
                _collect_write_acks(sftp, f, keep=0)
            except BaseException:
                _abandon(f)
                raise
            f.close()
        if offset + sent != blob.size:
            raise JobFailed(
                f"{self._what}: local file {blob.path} has {offset + sent} bytes, expected {blob.size}; it changed during the copy"
            )
        return sent

    @staticmethod
    def _stat(sftp: paramiko.SFTPClient, path: str) -> int | None:
        try:
            return sftp.stat(path).st_size
        except FileNotFoundError:
            return None

    @staticmethod
    def _remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            sftp.remove(path)
        except FileNotFoundError:
            pass

    def stat(self, key: str) -> int | None:
        path = self._path(key)
        with self._errors("checking", path):
            return self._stat(self._client(), path)

    def sha256(self, key: str) -> tuple[str, str]:
        path = self._path(key)
        with self._errors("hashing", path):
            sftp = self._client()
            size = sftp.stat(path).st_size or 0
            return self._hash(sftp, path, size)

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        with self._errors("reading", path):
            sftp = self._client()
            f = sftp.open(path, "rb")
            size = f.stat().st_size or 0
        return _RemoteReader(self, sftp, f, path, size)  # type: ignore[return-value]

    def list(self, prefix: str = "") -> list[str]:
        start = prefix if prefix.endswith("/") or not prefix else posixpath.dirname(prefix)
        top = self._path(start) if start.strip("/") else self.base
        keys: list[str] = []
        with self._errors("listing", top):
            sftp = self._client()
            stack = [top]
            while stack:
                d = stack.pop()
                try:
                    entries = sftp.listdir_attr(d)
                except FileNotFoundError:
                    continue
                for e in entries:
                    full = posixpath.join(d, e.filename)
                    if stat_mod.S_ISDIR(e.st_mode or 0):
                        stack.append(full)
                    elif not e.filename.endswith(PARTIAL):
                        key = posixpath.relpath(full, self.base)
                        if key.startswith(prefix):
                            keys.append(key)
        return sorted(keys)

    def remove(self, key: str) -> None:
        path = self._path(key)
        with self._errors("removing", path):
            self._remove_quietly(self._client(), path)


def _collect_write_acks(sftp: paramiko.SFTPClient, f: paramiko.SFTPFile, keep: int) -> None:
    """Read the server's answers to pipelined writes until at most ``keep`` are outstanding.

    paramiko files its pipelined writes under no file object, so when fewer than
    ~100 are in flight their error statuses (ENOSPC, EDQUOT...) are read and
    dropped by ``close()``: an upload to a full disk would "succeed". Reading
    them here raises the first error as IOError and bounds what is in flight.
    (Uses paramiko's ``_reqs``/``_read_response``, stable since paramiko 1.x.)
    """
    reqs = f._reqs
    while len(reqs) > keep:
        req = reqs.popleft()
        t, _ = sftp._read_response(req)  # raises IOError on an error status
        if t != CMD_STATUS:
            raise paramiko.SFTPError("expected a status reply to a write")


def _abandon(f: paramiko.SFTPFile) -> None:
    """Close a remote file after a failure without re-sending buffered data."""
    try:
        f._wbuffer = io.BytesIO()
        f._reqs.clear()
        f.close()
    except Exception:
        pass


def _is_hex64(s: str) -> bool:
    return len(s) == 64 and all(c in "0123456789abcdefABCDEF" for c in s)
