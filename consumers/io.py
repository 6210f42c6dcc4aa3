"""Reading and writing JSONL files (gzip when the name ends in ``.gz``; ``-`` is stdin/stdout)."""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import orjson


def open_bin(path: str, mode: str = "rb") -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer if "r" in mode else sys.stdout.buffer
    if path.endswith(".gz"):
        return gzip.open(path, mode, compresslevel=3 if "w" in mode else 9)  # type: ignore[return-value]
    return open(path, mode)  # noqa: SIM115


@contextmanager
def output(path: str | None) -> Iterator[IO[bytes]]:
    """A binary output stream for ``path`` (standard output when ``None`` or ``-``)."""
    if path is None or path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    f = open_bin(path, "wb")
    try:
        yield f
    finally:
        f.close()


def read_numbered(path: str, chunk: int = 4096) -> Iterator[tuple[list[int], list[bytes]]]:
    """Non-empty lines of a (possibly gzipped) file, in chunks, without the trailing newline,
    with their physical line numbers (1-based; blank lines are skipped but counted)."""
    f = open_bin(path, "rb")
    try:
        nums: list[int] = []
        buf: list[bytes] = []
        for no, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            nums.append(no)
            buf.append(line)
            if len(buf) >= chunk:
                yield nums, buf
                nums, buf = [], []
        if buf:
            yield nums, buf
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def read_lines(path: str, chunk: int = 4096) -> Iterator[list[bytes]]:
    """Non-empty lines of a (possibly gzipped) file, in chunks, without the trailing newline."""
    for _, lines in read_numbered(path, chunk):
        yield lines


def load_jsonl(path: str) -> list[Any]:
    return [orjson.loads(line) for lines in read_lines(path) for line in lines]
