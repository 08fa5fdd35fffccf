"""The error types of backupkit and the stable exit code each one maps to.

Every error the operator can see is one of these. Its message is one line that
names the file, field, host or backup concerned and says what to do. The CLI
prints ``backupkit: <message>`` and exits with ``exit_code``; see docs/exit-codes.md.
``str(error)`` is redacted (backupkit.redact): no URL credential, webhook token
or ``password=...`` value reaches the terminal, a log or a ledger record.
"""

from .redact import redact_text

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_VERIFY = 3
EXIT_OVERDUE = 4


class BackupkitError(Exception):
    """Base class: a job failed (exit 1)."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, always, with URL credentials and password=... pairs masked
        return redact_text(" ".join(self.message.split("\n")))


class JobFailed(BackupkitError):
    """A backup, copy, drill or restore could not be completed (exit 1)."""

    exit_code = EXIT_FAILED


class TransientError(JobFailed):
    """A failure that may pass by itself (connection lost, host unreachable): worth retrying (exit 1)."""


class ConfigError(BackupkitError):
    """Usage or configuration error: bad policy, missing key, unsafe file mode (exit 2)."""

    exit_code = EXIT_USAGE


class VerificationFailed(BackupkitError):
    """Corruption, tampering or a fingerprint mismatch was detected (exit 3)."""

    exit_code = EXIT_VERIFY


class LockTimeout(JobFailed):
    """Another run holds the policy's lock for longer than we are willing to wait."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived during a drill or restore; it was torn down and recorded (exit 128 + signal)."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum
