"""Named crash points for the crash-recovery tests.

``BACKUPKIT_FAILPOINT=<name>`` makes the process SIGKILL itself when it
reaches the point of that name (``<name>:stop``: SIGSTOP itself), so a test can kill a real run exactly between
two steps (for example between a backup's commit rename and its ledger
record) instead of mocking an exception. Unset, a failpoint costs one dict
lookup. The names are listed in docs/security.md.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    """``BACKUPKIT_FAILPOINT=name`` kills the process here; ``name:stop`` stops it (SIGSTOP) so a test can look
    at what exists at this point, then send it SIGTERM/SIGKILL and SIGCONT."""
    want = os.environ.get("BACKUPKIT_FAILPOINT")
    if want == name:
        os.kill(os.getpid(), signal.SIGKILL)
    elif want == name + ":stop":
        os.kill(os.getpid(), signal.SIGSTOP)
