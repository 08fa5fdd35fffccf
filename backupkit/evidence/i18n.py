"""Words, durations and times of the evidence report, in Chinese and English.

Every term comes from ``templates/glossary.yaml``. Durations read ``30分钟``,
``24小时``, ``36天8小时`` in Chinese; times are shown in the display zone with
its UTC offset, never bare UTC.
"""

from __future__ import annotations

import functools
import os
from datetime import date, datetime, timedelta, timezone, tzinfo
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from ..errors import ConfigError

LANGS = ("zh", "en")


@functools.lru_cache(maxsize=1)
def glossary() -> dict:
    text = (resources.files("backupkit.evidence") / "templates" / "glossary.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def label(lang: str, key: str, **args) -> str:
    text = glossary()["labels"][key][lang]
    return text.format(**args) if args else text


def term(section: str, key: str, lang: str) -> str:
    entry = glossary()[section].get(key)
    return entry[lang] if entry else key


def verdict_label(verdict: str, lang: str) -> str:
    return glossary()["verdicts"][verdict][lang]


def duration(seconds: float | timedelta | None, lang: str) -> str:
    """``30分钟``, ``24小时``, ``36天8小时``, ``2.4秒`` / ``30 min``, ``24 h``, ``36 d 8 h``, ``2.4 s``."""
    if seconds is None:
        return "—"
    secs = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
    neg, secs = secs < 0, abs(secs)
    units = (("天", "d", 86400), ("小时", "h", 3600), ("分钟", "min", 60), ("秒", "s", 1))
    if secs < 60:
        n = f"{secs:.{2 if secs < 1 else 1 if secs < 10 else 0}f}"
        n = n.rstrip("0").rstrip(".") if "." in n else n
        out = f"{n}秒" if lang == "zh" else f"{n} s"
    else:
        whole, parts = int(round(secs)), []
        for zh, en, size in units:
            if whole >= size:
                parts.append(f"{whole // size}{zh}" if lang == "zh" else f"{whole // size} {en}")
                whole %= size
        out = ("" if lang == "zh" else " ").join(parts[:2])
    return ("-" if neg else "") + out


def message(lang: str, key: str, args: dict) -> str:
    """A rationale or exception sentence; ``*_s`` arguments are seconds, shown as durations."""
    shown = {k: (duration(v, lang) if k.endswith("_s") else v) for k, v in args.items()}
    return glossary()["messages"][key][lang].format(**shown)


# ---- time zones ----------------------------------------------------------------------------------


def host_zone_name() -> str:
    """The host's zone name: $TZ, else the /etc/localtime link, else /etc/timezone, else UTC."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        return tz
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    try:
        name = Path("/etc/timezone").read_text().strip()
        if name:
            return name
    except OSError:
        pass
    return "UTC"


def zone(name: str | None, origin: str = "--tz") -> tzinfo:
    name = name or host_zone_name()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{origin}: {name!r} is not a time zone name; write e.g. Asia/Shanghai") from None


def offset_label(tz: tzinfo, at: datetime | None = None) -> str:
    at = at or datetime.now(timezone.utc)
    off = at.astimezone(tz).utcoffset() or timedelta(0)
    mins = int(off.total_seconds() // 60)
    sign = "+" if mins >= 0 else "-"
    return f"UTC{sign}{abs(mins) // 60:02d}:{abs(mins) % 60:02d}"


def zone_label(tz: tzinfo, at: datetime | None = None) -> str:
    return f"{getattr(tz, 'key', str(tz))}, {offset_label(tz, at)}"


def aware(iso: str) -> datetime:
    d = datetime.fromisoformat(iso)
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def local(iso: str | None, tz: tzinfo) -> datetime | None:
    return aware(iso).astimezone(tz) if iso else None


def show_time(iso: str | None, tz: tzinfo, *, seconds: bool = True) -> str:
    """``2026-01-05 02:00:13 +08:00``: the display zone, with its offset."""
    d = local(iso, tz)
    if d is None:
        return "—"
    off = d.strftime("%z")
    return d.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + f" {off[:3]}:{off[3:]}"


def local_day(iso: str, tz: tzinfo) -> date:
    return aware(iso).astimezone(tz).date()


def day_start(d: date, tz: tzinfo) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=tz)
