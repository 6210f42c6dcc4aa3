"""The native prompt memory (native/src/lib.rs, ``consumers._native``) against the pure-Python
reference (``PyPromptMemory``): the same answers, the same changelog form, through restores, on
streams of reused, near-duplicate and fresh prompts — and what it holds in memory.

The native module is optional (built by ``pip install`` when a Rust toolchain is present). CI
sets ``DISTILLWATCH_REQUIRE_NATIVE=1``: there a missing build fails instead of skipping."""

from __future__ import annotations

import os
import random

import orjson
import pytest

from consumers.core import prompt_memory
from consumers.core.prompt_keys import paraphrase_key_ints, prompt_key_ints
from consumers.core.prompt_memory import PyKeySet, PyPromptMemory

try:
    from consumers._native import KeySet as NativeKeySet
    from consumers._native import PromptMemory as NativePromptMemory
    from consumers._native import paraphrase_key_ints as native_paraphrase_key_ints
except ImportError:  # pragma: no cover - depends on the install
    NativePromptMemory = NativeKeySet = native_paraphrase_key_ints = None

needs_native = pytest.mark.skipif(NativePromptMemory is None and not os.environ.get("DISTILLWATCH_REQUIRE_NATIVE"),
                                  reason="consumers._native was not built (no Rust toolchain at install)")


def test_the_native_build_is_there_where_required() -> None:
    if not os.environ.get("DISTILLWATCH_REQUIRE_NATIVE"):
        pytest.skip("DISTILLWATCH_REQUIRE_NATIVE is not set")
    assert NativePromptMemory is not None, "consumers._native was not built: is cargo on PATH at install?"
    assert prompt_memory.NATIVE == (not os.environ.get("DISTILLWATCH_PURE_PYTHON"))


def _stream(seed: int, n: int = 3000) -> list[tuple[tuple[int, ...], int]]:
    rng = random.Random(seed)
    library = [rng.getrandbits(64) for _ in range(rng.choice((5, 60, 400)))]
    out = []
    for req in range(1, n):
        h = rng.choice(library)
        for _ in range(rng.choice((0, 0, 1, 2, 8))):  # the same prompt, a near-duplicate, a paraphrase
            h ^= 1 << rng.randrange(64)
        if rng.random() < (0.0, 0.3, 0.6)[seed % 3]:
            h = rng.getrandbits(64)
        out.append((prompt_key_ints(f"{h:016x}"), req))
    return out


@needs_native
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("capacity", [16, 64, 512])
def test_native_answers_as_the_reference(seed: int, capacity: int) -> None:
    assert NativePromptMemory is not None
    ref, nat = PyPromptMemory(capacity), NativePromptMemory(capacity)
    reused = 0
    for i, (keys, req) in enumerate(_stream(seed)):
        mask = (0xF, 0x3, 0x0)[i % 3]
        got = nat.use(keys, req, mask)
        assert got == ref.use(keys, req, mask), (i, keys)
        reused += got[2]
        assert len(nat) == len(ref) <= capacity
        if i % 97 == 0:  # the changelog form, and a restore from it
            assert nat.to_list() == ref.to_list()
            nat = NativePromptMemory.from_list(nat.to_list(), capacity)
    assert nat.to_list() == ref.to_list()
    assert reused > 0 or capacity < 64  # 16 keys remember under three prompts: reuse may not happen


@needs_native
def test_native_memory_is_compact() -> None:
    assert NativePromptMemory is not None
    rng = random.Random(1)
    m = NativePromptMemory(512)
    for req in range(1, 85):  # 504 keys of fresh prompts: a heavy account's memory, just below the cap
        m.use(prompt_key_ints(f"{rng.getrandbits(64):016x}"), req, 0xF)
    assert len(m) == 504
    assert m.nbytes() <= 10 * len(m) + 2 * 1024  # 8 bytes a key, a table of 2-byte slots
    assert PyPromptMemory().nbytes() == 0


@needs_native
def test_native_from_list_rejects_an_odd_list() -> None:
    assert NativePromptMemory is not None
    with pytest.raises(ValueError, match="odd"):
        NativePromptMemory.from_list([1, 2, 3])


@needs_native
@pytest.mark.parametrize("big", ["request", "key", "restored"])
def test_native_stays_exact_past_the_packed_layout(big: str) -> None:
    """A request number past 28 bits or a key past 35 bits does not fit an 8-byte entry: the
    memory moves to its wide layout, mid-stream or on restore, and answers as the reference."""
    assert NativePromptMemory is not None
    ref, nat = PyPromptMemory(64), NativePromptMemory(64)
    if big == "restored":
        v = [3, 1 << 40, 1 << 36, -5, 7, 2]
        ref, nat = PyPromptMemory.from_list(v, 64), NativePromptMemory.from_list(v, 64)
    for i, (keys, req) in enumerate(_stream(5, 400)):
        if big == "request" and i >= 150:
            req += 1 << 28
        if big == "key" and i == 200:
            keys = (1 << 40, *keys[1:])
        assert nat.use(keys, req, 0x3) == ref.use(keys, req, 0x3), i
        assert nat.to_list() == ref.to_list()
        assert nat.to_json() == ref.to_json() == orjson.dumps(ref.to_list())
    assert nat.nbytes() > 16 * len(nat)  # it did widen: 16 bytes a key


def _hexes(seed: int, n: int = 2000) -> list[str]:
    """SimHashes of a small template library with near-duplicates and fresh prompts, in either case."""
    rng = random.Random(seed)
    library = [rng.getrandbits(64) for _ in range(rng.choice((5, 60, 400)))]
    out = []
    for _ in range(n):
        h = rng.choice(library) if rng.random() < 0.7 else rng.getrandbits(64)
        for _ in range(rng.choice((0, 0, 1, 2, 8))):
            h ^= 1 << rng.randrange(64)
        out.append(f"{h:016X}" if rng.random() < 0.1 else f"{h:016x}")
    return out


@needs_native
@pytest.mark.parametrize("seed", range(6))
def test_native_use_hex_answers_as_the_reference(seed: int) -> None:
    """The keys of a SimHash, their first use and the fingerprints to announce, spelled."""
    assert NativePromptMemory is not None
    ref, nat = PyPromptMemory(64), NativePromptMemory(64)
    for i, h in enumerate(_hexes(seed)):
        mask = (0xF, 0x3, 0x0)[i % 3]
        assert nat.use_hex(h, i + 1, mask) == ref.use_hex(h, i + 1, mask), (i, h)
    assert nat.to_list() == ref.to_list()


@needs_native
@pytest.mark.parametrize("sample", [1, 4, 16, 64])
def test_native_paraphrase_keys_and_key_set_answer_as_the_reference(sample: int) -> None:
    assert NativeKeySet is not None and native_paraphrase_key_ints is not None
    ref, nat = PyKeySet(32), NativeKeySet(32)
    for i, h in enumerate(_hexes(sample)):
        assert native_paraphrase_key_ints(h, sample) == paraphrase_key_ints(h, sample), h
        assert nat.add_new_hex(h, sample) == ref.add_new_hex(h, sample), (i, h)
        if i % 3 == 0:
            nat.trim()
            ref.trim()
        assert len(nat) == len(ref)
        if i % 97 == 0:  # the changelog form, and a restore from it
            assert nat.to_bytes() == ref.to_bytes()
            nat = NativeKeySet.from_bytes(nat.to_bytes(), 32)
    keys = [k for h in _hexes(99, 50) for k in paraphrase_key_ints(h, 4)]
    assert NativeKeySet.from_keys(keys, 32).to_bytes() == PyKeySet.from_keys(keys, 32).to_bytes()
    assert [k in nat for k in keys[:40]] == [k in ref for k in keys[:40]]
    assert nat.nbytes() <= 5 * len(nat) * 5 // 4 + 300  # 5 bytes a key, grown by a quarter at most


@needs_native
def test_native_rejects_what_the_reference_rejects() -> None:
    assert NativePromptMemory is not None and NativeKeySet is not None
    for bad in ("0123", "0123456789abcdeg", "+123456789abcdef"):
        with pytest.raises(ValueError):
            NativePromptMemory().use_hex(bad, 1)
        with pytest.raises(ValueError):
            NativeKeySet().add_new_hex(bad, 16)
    with pytest.raises(ValueError):
        NativeKeySet().add_new_hex("0123456789abcdef", 3)
    with pytest.raises(OverflowError):
        NativeKeySet().add(1 << 40)
    with pytest.raises(OverflowError):
        PyKeySet().add(1 << 40)
    with pytest.raises(ValueError, match="5-byte"):
        NativeKeySet.from_bytes(b"1234")


_VALUES = [None, True, False, 0, 1, 2, -1, 2**63 - 1, 2**63, -(2**63 - 1), -(2**63), 10**30, 0.0, -0.0, 0.5, 1.0,
           1.5, float("nan"), float("inf"), "", "x", "ab", "AB", "a1", "éé", "é" * 64, "é" * 65, "0123456789abcdef",
           "0123456789ABCDEF", "0123456789abcdeg", "0123456789abcdef\n", "+123456789abcdef", [], {}, [1]]
_LENGTHS = [1, 2, 16, 63, 64, 65, 127, 128, 129, 511, 512, 513]


@needs_native
@pytest.mark.parametrize("seed", range(4))
def test_native_event_checks_give_the_reference_reasons(seed: int) -> None:
    """Mutated events (fields missing, of other types, at and past their bounds): the native
    checks give exactly the reference's reason, or none when it gives none."""
    from consumers._native import check_event
    from consumers.contract.events import py_check_event
    from tests.eventgen import valid_event

    rng = random.Random(seed)
    base = valid_event()
    fields = list(base)
    reasons = set()
    for i in range(3000):
        ev = dict(base)
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            k = rng.choice(fields)
            r = rng.random()
            if r < 0.15:
                ev.pop(k, None)
            elif r < 0.3:
                ev[k] = "y" * rng.choice(_LENGTHS)
            else:
                ev[k] = rng.choice(_VALUES)
        want = py_check_event(ev)
        assert check_event(ev) == want, (i, ev)
        reasons.add(want)
    assert None in reasons and len(reasons) > 20  # valid ones, and many kinds of invalid ones


_PIPELINE = """
import hashlib, sys
from consumers.core import prompt_memory
from consumers.core.config import DetectorConfig
from consumers.core.pipeline import LocalPipeline
from consumers.sim.generator import Simulation
import orjson
lines = [orjson.dumps(e) for e in Simulation("smoke", 3).events()]
flags = LocalPipeline(DetectorConfig()).feed(lines)
print(prompt_memory.NATIVE, len(flags), hashlib.sha256(b"\\n".join(flags)).hexdigest())
"""


@needs_native
def test_the_pipeline_gives_the_same_flags_native_and_pure() -> None:
    """The whole detector, once with the native hot path and once with DISTILLWATCH_PURE_PYTHON=1
    (each in its own process: the choice is made at import): byte-identical flags."""
    import subprocess
    import sys

    out = {}
    for pure in ("", "1"):
        env = {k: v for k, v in os.environ.items() if k != "DISTILLWATCH_PURE_PYTHON"}
        if pure:
            env["DISTILLWATCH_PURE_PYTHON"] = pure
        res = subprocess.run([sys.executable, "-c", _PIPELINE], capture_output=True, text=True, env=env,
                             timeout=600, check=True)
        out[pure] = res.stdout.split()
    assert out[""][0] == "True" and out["1"][0] == "False"
    assert int(out[""][1]) > 10  # the smoke scenario's campaigns are flagged
    assert out[""][1:] == out["1"][1:]
