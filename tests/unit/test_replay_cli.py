"""``distillwatch replay --input FILE [--output FILE]`` through ``consumers.cli.main``.

Contract (CONTRACT.md): same detection as ``detect``, in file order, no broker; gzip when the name
ends in ``.gz``; malformed lines counted and reported on standard error (with their line
numbers), never fatal; deterministic; Flag v1 JSONL out (standard output without ``--output``).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import orjson
import pytest

from consumers.cli import main
from consumers.contract.flags import Flag
from consumers.core.config import DetectorConfig
from consumers.core.pipeline import LocalPipeline
from tests.eventgen import scenario, write_jsonl

BAD = [b"{broken", b'{"schema_version":1}', b"[1,2,3]", b'"just a string"', b"\xff\xfe garbage"]


@pytest.fixture(scope="module")
def good_lines() -> list[bytes]:
    return scenario(seed=1, n_benign=6, n_org=3, n_hydra=10, days=1).lines()


def with_bad(good: list[bytes]) -> tuple[list[bytes], list[int]]:
    """The good lines with the BAD ones inserted; returns the lines and the 1-based bad line numbers."""
    lines = list(good)
    numbers = []
    for i, b in enumerate(BAD):
        pos = 5 + 37 * i
        lines.insert(pos, b)
        numbers.append(pos + 1)
    return lines, numbers


def reported_lines(err: str) -> list[int]:
    return [int(m) for m in re.findall(r"^replay: line (\d+): \S", err, flags=re.M)]


def replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["replay", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_replay_file_with_malformed_lines(tmp_path: Path, good_lines: list[bytes],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    lines, bad_numbers = with_bad(good_lines)
    src = write_jsonl(tmp_path / "events.jsonl", lines)
    dst = tmp_path / "flags.jsonl"
    rc, _, err = replay(capsys, "--input", str(src), "--output", str(dst))
    assert rc == 0
    assert reported_lines(err)[: len(BAD)] == bad_numbers, err
    assert f"{len(BAD)} malformed" in err
    out = dst.read_bytes().splitlines()
    assert out, "the scenario must produce flags"
    for raw in out:
        Flag.model_validate_json(raw)
    assert {orjson.loads(r)["action"] for r in out} & {"throttle", "suspend"}
    # the same flags as the core on the good lines alone: malformed lines change nothing
    assert out == LocalPipeline(DetectorConfig()).feed(good_lines)


def test_replay_to_stdout(tmp_path: Path, good_lines: list[bytes], capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(tmp_path / "events.jsonl", good_lines)
    rc, out, err = replay(capsys, "--input", str(src))
    assert rc == 0
    lines = out.encode().splitlines()
    assert lines == LocalPipeline(DetectorConfig()).feed(good_lines)
    assert "0 malformed" in err


def test_gzip_input_and_output(tmp_path: Path, good_lines: list[bytes], capsys: pytest.CaptureFixture[str]) -> None:
    lines, bad_numbers = with_bad(good_lines)
    plain = write_jsonl(tmp_path / "events.jsonl", lines)
    gz = write_jsonl(tmp_path / "events.jsonl.gz", lines)
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    rc1, _, _ = replay(capsys, "--input", str(plain), "--output", str(tmp_path / "a.jsonl"))
    rc2, _, err = replay(capsys, "--input", str(gz), "--output", str(tmp_path / "b.jsonl.gz"))
    assert rc1 == rc2 == 0
    assert reported_lines(err)[: len(BAD)] == bad_numbers
    b = gzip.decompress((tmp_path / "b.jsonl.gz").read_bytes())
    assert b == (tmp_path / "a.jsonl").read_bytes() != b""


def test_deterministic(tmp_path: Path, good_lines: list[bytes], capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(tmp_path / "events.jsonl", with_bad(good_lines)[0])
    outs = []
    for name in ("one.jsonl", "two.jsonl"):
        rc, _, _ = replay(capsys, "--input", str(src), "--output", str(tmp_path / name))
        assert rc == 0
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1] != b""


def test_many_malformed_lines_are_summarised(tmp_path: Path, good_lines: list[bytes],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    lines = [x for g in good_lines[:200] for x in (g, b"nope")]
    src = write_jsonl(tmp_path / "events.jsonl", lines)
    rc, _, err = replay(capsys, "--input", str(src), "--output", str(tmp_path / "f.jsonl"))
    assert rc == 0
    assert "200 malformed" in err
    reported = reported_lines(err)
    assert reported[:5] == [2, 4, 6, 8, 10]
    assert re.search(r"\b\d+ more malformed lines", err), "the rest is counted, not listed"
    assert len(err.splitlines()) < 40, "stderr is not flooded"


def test_missing_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    rc, out, err = replay(capsys, "--input", str(missing), "--output", str(tmp_path / "f.jsonl"))
    assert rc == 2
    assert "no such file" in err and str(missing) in err
    assert out == ""


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "empty.jsonl"
    src.write_bytes(b"")
    rc, _, err = replay(capsys, "--input", str(src), "--output", str(tmp_path / "f.jsonl"))
    assert rc == 0
    assert (tmp_path / "f.jsonl").read_bytes() == b""
    assert "0 lines" in err


def test_line_numbers_count_blank_lines(tmp_path: Path, good_lines: list[bytes],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    lines = list(good_lines[:30])
    lines.insert(10, b"")          # a blank line: physical line 11
    lines.insert(20, b"{broken")   # physical line 21
    src = write_jsonl(tmp_path / "events.jsonl", lines)
    rc, _, err = replay(capsys, "--input", str(src), "--output", str(tmp_path / "f.jsonl"))
    assert rc == 0
    assert reported_lines(err)[0] == 21, err


def test_missing_input_leaves_output_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dst = tmp_path / "flags.jsonl"
    dst.write_bytes(b"previous run\n")
    rc, _, _ = replay(capsys, "--input", str(tmp_path / "nope.jsonl"), "--output", str(dst))
    assert rc == 2
    assert dst.read_bytes() == b"previous run\n"
