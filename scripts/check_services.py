"""Fail loudly (exit 1) when a service the test suite needs is not reachable."""

import socket
import sys

NEEDED = {"PostgreSQL": ("127.0.0.1", 5432), "MariaDB": ("127.0.0.1", 3306)}
bad = []
for name, (host, port) in NEEDED.items():
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as e:
        bad.append(f"{name} on {host}:{port} ({e})")
if bad:
    sys.exit("test.sh: required services unreachable: " + "; ".join(bad) + ". Start them before running the tests.")
