"""Timestamps in manifests: ISO 8601 text, always with a timezone, compared in UTC."""

from __future__ import annotations

import datetime as dt
import re

_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


def parse_time(text: str) -> dt.datetime:
    """Parse ``YYYY-MM-DD`` (meaning the end of that day, UTC) or an ISO datetime with a timezone."""
    if _DATE_RE.match(text):
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a valid date: {text!r}") from None
        return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(f"must be YYYY-MM-DD or an ISO 8601 datetime with timezone; got {text!r}") from None
    if value.tzinfo is None:
        raise ValueError(f"datetime needs a timezone (add 'Z' for UTC); got {text!r}")
    return value.astimezone(dt.timezone.utc)


def format_time(value: dt.datetime) -> str:
    """Render a datetime as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds)."""
    return value.astimezone(dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now() -> dt.datetime:
    """The current time in UTC."""
    return dt.datetime.now(dt.timezone.utc)


def is_expired(expires_at: str | None, now: dt.datetime | None = None) -> bool:
    """Whether a manifest with this ``expires_at`` has expired at ``now``."""
    return expires_at is not None and (now or utc_now()) >= parse_time(expires_at)
