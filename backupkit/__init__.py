"""backupkit: nightly database backups, monthly restore drills, signed evidence."""

__version__ = "0.1.0"
FORMAT_VERSION = 1
