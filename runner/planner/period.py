"""Time periods of a composite, named as odc-stats names them (``2023--P1Y``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from runner.common.errors import UserInputError

_ISO_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})--(\d{4}-\d{2}-\d{2})$")
_DURATION_RE = re.compile(r"^(\d{4}(?:-\d{2}(?:-\d{2})?)?)--P(\d+)([YMD])$")


def _add_months(d: date, months: int) -> date:
    m = d.month - 1 + months
    return (
        date(d.year + m // 12, m % 12 + 1, 1)
        if d.day == 1
        else date(d.year + m // 12, m % 12 + 1, d.day)
    )


@dataclass(frozen=True, slots=True)
class Period:
    """A closed range of days ``[start, end]`` and its label for file names."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise UserInputError(f"period ends ({self.end}) before it starts ({self.start})")

    @property
    def label(self) -> str:
        """``2023--P1Y`` for a calendar year, ``2023-01--P6M`` for whole months, else ``2023-01-05--P30D``."""
        s, e = self.start, self.end
        nxt = e + timedelta(days=1)
        if s.month == 1 and s.day == 1 and nxt == date(s.year + 1, 1, 1):
            return f"{s.year}--P1Y"
        if s.day == 1 and nxt.day == 1:
            months = (nxt.year - s.year) * 12 + nxt.month - s.month
            return f"{s:%Y-%m}--P{months}M"
        return f"{s:%Y-%m-%d}--P{(nxt - s).days}D"

    def stac_datetime(self) -> str:
        """``start/end`` interval for STAC searches (whole days, UTC)."""
        return f"{self.start:%Y-%m-%d}T00:00:00Z/{self.end:%Y-%m-%d}T23:59:59Z"

    def contains(self, t: datetime | date) -> bool:
        d = t.date() if isinstance(t, datetime) else t
        return self.start <= d <= self.end

    @classmethod
    def year(cls, year: int) -> Period:
        return cls(date(year, 1, 1), date(year, 12, 31))

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse ``2023``, ``2023-01-01--2023-06-30`` or ``2023--P1Y`` / ``2023-04--P6M`` / ``2023-04-01--P10D``."""
        t = text.strip()
        try:
            if re.fullmatch(r"\d{4}", t):
                return cls.year(int(t))
            if m := _ISO_RE.match(t):
                return cls(date.fromisoformat(m.group(1)), date.fromisoformat(m.group(2)))
            if m := _DURATION_RE.match(t):
                head, n, unit = m.group(1), int(m.group(2)), m.group(3)
                parts = [int(p) for p in head.split("-")]
                start = date(
                    parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1
                )
                if n < 1:
                    raise ValueError("duration must be at least 1")
                if unit == "Y":
                    nxt = _add_months(start, 12 * n)
                elif unit == "M":
                    nxt = _add_months(start, n)
                else:
                    nxt = start + timedelta(days=n)
                return cls(start, nxt - timedelta(days=1))
        except ValueError as e:
            raise UserInputError(f"invalid period {text!r}: {e}") from None
        raise UserInputError(
            f"invalid period {text!r}: use 2023, 2023-01-01--2023-06-30 or 2023--P1Y"
        )
