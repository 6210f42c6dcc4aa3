"""Whether the native hot path is used: one rule for every module that has a native twin.

``consumers._native`` (``native/src/lib.rs``) is built by ``pip install`` when a Rust toolchain is
there. A module with a native twin (``consumers.contract.events``: the event checks;
``consumers.core.prompt_memory``: prompt and paraphrase keys) uses it when it was built and
``DISTILLWATCH_PURE_PYTHON`` is not set, and its pure-Python reference otherwise.
"""

from __future__ import annotations

import os
from types import ModuleType


def native_module() -> ModuleType | None:
    """``consumers._native`` when it was built and ``DISTILLWATCH_PURE_PYTHON`` is not set, else
    None (the pure-Python references)."""
    if os.environ.get("DISTILLWATCH_PURE_PYTHON"):
        return None
    try:
        from consumers import _native
    except ImportError:  # pragma: no cover - depends on the install
        return None
    return _native
