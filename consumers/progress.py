"""Progress of a long batch job (a topic replay): a bar on a terminal, JSON log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

import structlog

log = structlog.get_logger("distillwatch.replay_topic")

__all__ = ["Progress"]


def _hms(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """A one-line progress bar (rate, ETA) on a terminal, else ``replay_progress`` log lines.

    ``mode``: ``auto`` (bar when ``stream`` is a TTY), ``bar``, ``log`` or ``none``.
    """

    def __init__(self, total: int, mode: str = "auto", stream: IO[str] | None = None,
                 bar_every_s: float = 0.25, log_every_s: float = 10.0):
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            mode = "bar" if isatty is not None and isatty() else "log"
        self.mode = mode
        self.total = total
        self.every = bar_every_s if mode == "bar" else log_every_s
        self.t0 = time.monotonic()
        self._next = self.t0 + self.every
        self._width = 0

    def stats(self, done: int) -> dict[str, Any]:
        secs = max(time.monotonic() - self.t0, 1e-9)
        rate = done / secs
        left = max(self.total - done, 0)
        eta = left / rate if rate > 0 else None
        pct = 100.0 * done / self.total if self.total else 100.0
        return {"done": done, "total": self.total, "pct": round(min(pct, 100.0), 2),
                "rate_per_s": round(rate, 1), "eta_s": round(eta, 1) if eta is not None else None,
                "elapsed_s": round(secs, 1)}

    def line(self, done: int, flags: int) -> str:
        st = self.stats(done)
        width = 28
        filled = int(width * st["pct"] / 100)
        bar = "#" * filled + "." * (width - filled)
        return (f"replay {st['pct']:5.1f}% [{bar}] {done:,}/{self.total:,} msgs "
                f"{st['rate_per_s']:,.0f} msg/s ETA {_hms(st['eta_s'])} flags {flags:,}")

    def update(self, done: int, flags: int, force: bool = False) -> None:
        if self.mode == "none":
            return
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self.every
        if self.mode == "bar":
            text = self.line(done, flags)
            pad = max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
        else:
            log.info("replay_progress", flags=flags, **self.stats(done))

    def close(self, done: int, flags: int) -> None:
        if self.mode == "bar":
            self.update(done, flags, force=True)
            self.stream.write("\n")
            self.stream.flush()
        elif self.mode == "log":
            self.update(done, flags, force=True)
