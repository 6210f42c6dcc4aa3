"""The native prompt memory (native/src/lib.rs, ``consumers._native``) against the pure-Python
reference (``PyPromptMemory``): the same answers, the same changelog form, through restores, on
streams of reused, near-duplicate and fresh prompts — and what it holds in memory.

The native module is optional (built by ``pip install`` when a Rust toolchain is present). CI
sets ``DISTILLWATCH_REQUIRE_NATIVE=1``: there a missing build fails instead of skipping."""

from __future__ import annotations

import os
import random

import pytest

from consumers.core import prompt_memory
from consumers.core.features import prompt_key_ints
from consumers.core.prompt_memory import PyPromptMemory

try:
    from consumers._native import PromptMemory as NativePromptMemory
except ImportError:  # pragma: no cover - depends on the install
    NativePromptMemory = None

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
    assert nat.nbytes() > 16 * len(nat)  # it did widen: 16 bytes a key
