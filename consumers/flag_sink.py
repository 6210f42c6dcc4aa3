"""Where a replay's flags go while it runs: a file written as ``FILE.partial`` and renamed at the
end (an interrupted run never leaves a complete-looking file) and/or a spool for a topic."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import IO

from consumers.io import open_bin

__all__ = ["FlagSink"]


class FlagSink:
    """Flags to a file (``FILE.partial``, renamed by :meth:`commit`) and/or a spool for a topic.

    Keeps the SHA-256 of the flag lines: two runs gave identical flags iff the digests match.
    """

    def __init__(self, path: str | None, spool: bool):
        self.path = path
        self.count = 0
        self.sha = hashlib.sha256()
        self._stdout = path == "-"
        self._tmp = None if path is None or self._stdout else path + ".partial"
        self._file: IO[bytes] | None
        if self._stdout:
            self._file = sys.stdout.buffer
        elif self._tmp is not None:
            self._file = open_bin(self._tmp, "wb")
        else:
            self._file = None
        self._spool: IO[bytes] | None = tempfile.TemporaryFile(prefix="distillwatch-replay-") if spool else None  # noqa: SIM115

    def write(self, flags: list[bytes]) -> None:
        if not flags:
            return
        data = b"\n".join(flags) + b"\n"
        self.sha.update(data)
        self.count += len(flags)
        if self._file is not None:
            self._file.write(data)
        if self._spool is not None:
            self._spool.write(data)

    def spooled(self) -> Iterator[bytes]:
        """The spooled flag values, in order."""
        if self._spool is None:
            return
        self._spool.flush()
        self._spool.seek(0)
        for line in self._spool:
            line = line.rstrip(b"\n")
            if line:
                yield line

    def commit(self) -> None:
        """Close the file and move it into place."""
        if self._file is not None:
            self._file.flush()
            if not self._stdout:
                self._file.close()
        if self._tmp is not None and self.path is not None:
            os.replace(self._tmp, self.path)
        self._file = None

    def discard(self) -> None:
        """Drop everything (interrupted or failed replay): no file is left behind."""
        if self._file is not None and not self._stdout:
            self._file.close()
        self._file = None
        if self._tmp is not None and os.path.exists(self._tmp):
            os.remove(self._tmp)
        self.close_spool()

    def close_spool(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
