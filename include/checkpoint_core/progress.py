"""Progress lines for long work: done/total, rate and ETA, at most every few seconds.

Operators pass their task logger's ``info``; the core stays free of Airflow.
"""

from __future__ import annotations

import time
from typing import Callable


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    def __init__(self, total: int | None, unit: str, log: Callable[[str], None], *, every_s: float = 5.0, label: str = ""):
        self.total = total
        self.unit = unit
        self.log = log
        self.every_s = every_s
        self.label = f"{label}: " if label else ""
        self.done = 0
        self.started = time.monotonic()
        self._last = self.started

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.log(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}{self.done:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({100 * self.done / self.total:.1f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:,.0f} {self.unit}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        return text

    def finish(self) -> dict:
        elapsed = time.monotonic() - self.started
        self.log(f"{self.label}done: {self.done:,} {self.unit} in {_duration(elapsed)}")
        return {"done": self.done, "seconds": round(elapsed, 3)}
