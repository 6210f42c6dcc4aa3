"""The import layering of ``pyproject.toml`` ([tool.importlinter]) holds: the core knows no Kafka,
services never import commands, the contract imports nothing of ours, no import cycles, and the
simulator's layers (the named attack families and the sweep never import each other).

Runs ``lint-imports`` (import-linter, a dev extra) so ``make test`` and CI check it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which(
        "lint-imports")
    assert exe, "lint-imports not installed: pip install -e '.[dev]'"
    res = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "BROKEN" not in res.stdout and "KEPT" in res.stdout
