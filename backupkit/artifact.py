"""The on-disk backup stream format (docs/format.md).

One stream is ``<name>.zst.age``: the engine's native dump bytes, compressed
with zstd (multi-threaded) and encrypted with age to X25519 recipients. Two
SHA-256 digests are taken on the way: of the content (the native dump) and of
the artifact (the file). Reading reverses the pipeline and checks both. Any
operator with the ``age`` and ``zstd`` command-line tools can restore a stream
without backupkit.

Memory stays bounded: every stage streams in ``CHUNK``-sized pieces.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import queue
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import pyrage
import zstandard

from .engines.base import StreamInfo
from .errors import JobFailed, VerificationFailed
from .files import create_private, is_regular, open_regular
from .keys import Identity, Recipient

CHUNK = 1 << 20
SUFFIX = ".zst.age"
INTERNAL_STREAMS = ("fpkey",)  # backupkit's own streams, never handed to an engine (keyed.py)


class HashingReader(io.RawIOBase):
    """Pass-through reader that hashes and counts what flows through it."""

    def __init__(self, raw: BinaryIO, on_bytes: Callable[[int], None] | None = None):
        self.raw = raw
        self.on_bytes = on_bytes
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.error: BaseException | None = None  # what the source raised, before pyrage wraps it

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            data = self.raw.read(len(b))
        except BaseException as e:
            self.error = e
            raise
        n = len(data)
        b[:n] = data
        self.sha.update(data)
        self.bytes += n
        if self.on_bytes is not None:
            self.on_bytes(n)
        return n

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.raw.read(size if size and size > 0 else CHUNK)
        except BaseException as e:
            self.error = e
            raise
        self.sha.update(data)
        self.bytes += len(data)
        if self.on_bytes is not None:
            self.on_bytes(len(data))
        return data


class HashingWriter(io.RawIOBase):
    """Pass-through writer that hashes and counts what flows through it."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.error: BaseException | None = None  # what the destination raised, before pyrage wraps it

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        try:
            self.raw.write(b)
        except BaseException as e:
            self.error = e
            raise
        self.sha.update(b)
        n = len(b)
        self.bytes += n
        return n

    def flush(self) -> None:
        self.raw.flush()


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


# Long-distance matching over a 16 MiB window: about 2% smaller dumps for a few percent
# more CPU, still decodable by a plain `zstd -d` (default limit 128 MiB) in little memory.
LDM_WINDOW_LOG = 24


def compression_params(level: int, threads: int | None, long_distance: bool) -> zstandard.ZstdCompressionParameters:
    extra = {"window_log": LDM_WINDOW_LOG, "enable_ldm": True} if long_distance else {}
    return zstandard.ZstdCompressionParameters.from_level(
        level, threads=default_threads() if threads is None else threads, **extra)


def write_stream(
    reader: BinaryIO,
    out_path: Path,
    recipients: Iterable[Recipient],
    *,
    name: str = "data",
    level: int = 3,
    threads: int | None = None,
    long_distance: bool = True,
    on_bytes: Callable[[int], None] | None = None,
) -> StreamInfo:
    """Given a readable stream, write ``out_path`` as zstd+age and fsync it.

    Returns the content and artifact sizes and SHA-256 digests. The file is
    complete and durable when this returns; on error it may be partial and the
    caller discards it.
    """
    recips = [r.to_pyrage() for r in recipients]
    content = HashingReader(reader, on_bytes)
    cctx = zstandard.ZstdCompressor(compression_params=compression_params(level, threads, long_distance))
    with open(out_path, "wb") as f:
        art = HashingWriter(f)
        try:
            with cctx.stream_reader(content, read_size=CHUNK, closefd=False) as compressed:
                pyrage.encrypt_io(io.BufferedReader(compressed, CHUNK), art, recips)
        except (pyrage.EncryptError, zstandard.ZstdError) as e:
            # pyrage wraps whatever the source or the file raised; re-raise the original cause
            original = content.error or art.error
            if original is not None:
                raise original from None
            raise JobFailed(f"writing {out_path}: {e}") from None
        f.flush()
        os.fsync(f.fileno())
    return StreamInfo(
        name=name,
        file=out_path.name,
        content_bytes=content.bytes,
        content_sha256=content.sha.hexdigest(),
        artifact_bytes=art.bytes,
        artifact_sha256=art.sha.hexdigest(),
    )


def sha256_file(path: Path) -> tuple[str, int]:
    """Hex SHA-256 and size of a file, read in large chunks."""
    h = hashlib.sha256()
    n = 0
    with open_regular(path, str(path)) as f:
        buf = bytearray(4 * CHUNK)
        view = memoryview(buf)
        while True:
            k = f.readinto(buf)
            if not k:
                break
            h.update(view[:k])
            n += k
    return h.hexdigest(), n


def check_stream_files(directory: Path, streams: list[dict], what: str) -> None:
    """Every stream file in ``directory`` exists with the size and SHA-256 the manifest records.

    Raises VerificationFailed naming ``what`` and the file. Needs no key.
    """
    for s in streams:
        path = directory / stream_file_name(s, what)
        try:
            size = os.lstat(path).st_size
        except FileNotFoundError:
            raise VerificationFailed(f"{what}: {s['file']} is missing") from None
        if not is_regular(path):
            raise VerificationFailed(f"{what}: {s['file']} is not a regular file (a symlink, directory or device was put there)")
        if size != s["artifact_bytes"]:
            raise VerificationFailed(f"{what}: {s['file']} is {size} bytes, the manifest says {s['artifact_bytes']}; the artifact is truncated or corrupt")
        digest, size = sha256_file(path)
        if size != s["artifact_bytes"] or digest != s["artifact_sha256"]:
            raise VerificationFailed(f"{what}: {s['file']} SHA-256 or size differs from the manifest; the artifact is corrupt")


def stream_file_name(stream: dict, what: str) -> str:
    """A stream's file name from a (signed) manifest: a plain ``<name>.zst.age``, never a path."""
    name = stream.get("file") if isinstance(stream, dict) else None
    if not isinstance(name, str) or "/" in name or name.startswith(".") or not name.endswith(SUFFIX):
        raise VerificationFailed(f"{what}: the manifest names an invalid stream file {name!r}")
    return name


def no_identity_message(what: str, recipient_ids: list[str], identities: list[Identity]) -> str:
    have = ", ".join(i.id for i in identities) or "none"
    want = ", ".join(recipient_ids) or "unknown"
    return (
        f"{what}: no identity matches the backup's recipients (backup encrypted to key IDs {want}; "
        f"identity file holds {have}); use the escrowed identity for one of those keys"
    )


class _Handoff(io.RawIOBase):
    """The writable end of a bounded hand-off between two threads of a pipeline (``chunks`` is the readable end)."""

    DEPTH = 4  # chunks in flight: bounded memory (DEPTH x CHUNK)

    def __init__(self):
        self.queue: queue.Queue = queue.Queue(maxsize=self.DEPTH)
        self.aborted = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        data = bytes(b)
        while True:
            if self.aborted.is_set():
                raise BrokenPipeError("the reading side stopped")
            try:
                self.queue.put(data, timeout=0.2)
                return len(data)
            except queue.Full:
                continue

    def chunks(self):
        """Yield what was written, until the writer is done; then yield nothing more."""
        while (item := self.queue.get()) is not _DONE:
            yield item

    def abort(self) -> None:
        self.aborted.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()

    def finish(self) -> None:
        """The writing side is done: the reading side ends after what is queued (nothing, once aborted)."""
        while True:
            try:
                self.queue.put(_DONE, timeout=0.2)
                return
            except queue.Full:
                if self.aborted.is_set():  # the reader stopped: make room for the end mark
                    self.abort()


_DONE = object()


def read_stream(
    artifact: BinaryIO,
    writer: BinaryIO,
    identities: list[Identity],
    info: StreamInfo | dict,
    *,
    what: str,
    recipient_ids: list[str] | None = None,
) -> None:
    """Decrypt and decompress ``artifact`` into ``writer``, checking both digests.

    ``info`` is the manifest's record of the stream. Raises VerificationFailed
    when either digest or size differs, JobFailed when no identity fits.

    Three stages, each on its own thread, joined by bounded hand-offs: decryption
    (pyrage, which holds the GIL), decompression (this thread), and hashing and
    writing the plaintext (zstandard, hashlib and file writes release the GIL):
    on two cores the stages overlap instead of adding up. A failed write stops
    the other stages and is raised as itself.
    """
    if isinstance(info, dict):
        info = StreamInfo(**info)
    art = HashingReader(artifact)
    content = HashingWriter(writer)
    handoff = _Handoff()
    failure: list[BaseException] = []

    def decrypt() -> None:
        try:
            with io.BufferedWriter(handoff, CHUNK) as out:
                pyrage.decrypt_io(io.BufferedReader(art, CHUNK), out, [i.secret for i in identities])
        except BaseException as e:  # judged below, in the reading thread
            failure.append(e)
        finally:
            handoff.queue.put(_DONE)

    behind = _Handoff()  # decompressed chunks, on their way to be hashed and written
    write_failure: list[BaseException] = []

    def write_out() -> None:
        try:
            for chunk in behind.chunks():
                content.write(chunk)
        except BaseException as e:  # raised below, in the reading thread
            write_failure.append(e)
            behind.abort()  # the decompressing side's next write raises BrokenPipeError

    worker = threading.Thread(target=decrypt, name="age-decrypt", daemon=True)
    writer_thread = threading.Thread(target=write_out, name="plain-write", daemon=True)
    worker.start()
    writer_thread.start()
    dctx = zstandard.ZstdDecompressor()
    try:
        try:
            with dctx.stream_writer(behind, closefd=False, write_size=CHUNK) as plain:
                for chunk in handoff.chunks():
                    plain.write(chunk)
        finally:
            handoff.abort()  # a failed write here stops the decryption; a finished one finds it done
            worker.join()
            behind.finish()  # all written (or, after a failure, dropped): the writer ends
            writer_thread.join()
    except (zstandard.ZstdError, BrokenPipeError) as e:
        if write_failure:  # the writer stopped first: its error, not what it caused here
            raise write_failure[0] from None
        if isinstance(e, BrokenPipeError):
            raise
        raise VerificationFailed(f"{what}: stream {info.file} does not decompress ({e}); the artifact is corrupt") from None
    if write_failure:
        raise write_failure[0] from None
    if failure:
        e = failure[0]
        if art.error is not None:  # reading the artifact failed (I/O), whatever pyrage made of it
            raise art.error from None
        if not isinstance(e, (pyrage.DecryptError, OSError)):
            raise e
        if "No matching keys" in str(e):
            raise JobFailed(no_identity_message(what, recipient_ids or [], identities)) from None
        # pyrage reports a bad header as DecryptError and a bad payload chunk as OSError("decryption error")
        raise VerificationFailed(f"{what}: stream {info.file} fails age authentication ({e}); the artifact is corrupt or was altered") from None
    if art.sha.hexdigest() != info.artifact_sha256 or art.bytes != info.artifact_bytes:
        raise VerificationFailed(f"{what}: {info.file} artifact SHA-256 differs from the manifest; the artifact is corrupt or was altered")
    if content.sha.hexdigest() != info.content_sha256 or content.bytes != info.content_bytes:
        raise VerificationFailed(f"{what}: {info.file} content SHA-256 differs from the manifest; the backup cannot be trusted")


class DirectorySink:
    """A DumpSink writing streams into a staging backup directory."""

    def __init__(self, directory: Path, recipients: list[Recipient], *, level: int = 3, threads: int | None = None,
                 long_distance: bool = True):
        self.directory = directory
        self.workdir = directory / "work"
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.recipients = recipients
        self.level = level
        self.threads = threads
        self.long_distance = long_distance
        self.streams: list[StreamInfo] = []
        self.on_bytes: Callable[[int], None] | None = None

    def write_stream(self, name: str, reader: BinaryIO) -> StreamInfo:
        if any(s.name == name for s in self.streams):
            raise ValueError(f"stream {name!r} written twice")
        info = write_stream(
            reader, self.directory / f"{name}{SUFFIX}", self.recipients, name=name, level=self.level,
            threads=self.threads, long_distance=self.long_distance, on_bytes=self.on_bytes,
        )
        self.streams.append(info)
        return info


class DirectorySource:
    """A RestoreSource over a directory holding a backup's ``*.zst.age`` files.

    ``streams`` are the manifest's stream records (already signature-checked).
    """

    def __init__(self, directory: Path, streams: list[dict], identities: list[Identity], *, what: str, recipient_ids: list[str]):
        self.directory = directory
        self.streams = {s["name"]: StreamInfo(**s) for s in streams}
        self.identities = identities
        self.what = what
        self.recipient_ids = recipient_ids

    def stream_names(self) -> list[str]:
        """The streams an engine restores: ``data`` first; never backupkit's own (the fingerprint key)."""
        names = [n for n in self.streams if n not in INTERNAL_STREAMS]
        return sorted(names, key=lambda n: (n != "data", n))

    def read_small(self, name: str, limit: int = 1 << 16) -> bytes:
        """Decrypt a small stream into memory (checking both digests), e.g. the fingerprint key."""
        info = self.streams[name]
        if info.content_bytes > limit:
            raise VerificationFailed(f"{self.what}: stream {name} is {info.content_bytes} bytes, expected at most {limit}")
        buf = io.BytesIO()
        self.stream_to(name, buf)
        return buf.getvalue()

    def stream_to(self, name: str, writer: BinaryIO) -> None:
        info = self.streams[name]
        with open_regular(self.directory / info.file, self.what) as f:
            read_stream(f, writer, self.identities, info, what=self.what, recipient_ids=self.recipient_ids)

    def to_file(self, name: str, path: Path) -> Path:
        with create_private(path) as out:  # decrypted patient data: private from the first byte
            self.stream_to(name, out)
        return path
