"""``detect`` imports river (~0.9 s) in the background while it waits on the broker."""

from __future__ import annotations

import subprocess
import sys


def test_preload_imports_river_in_a_background_thread() -> None:
    code = (
        "import sys, threading\n"
        "from consumers.detect import preload_river\n"
        "assert 'river' not in sys.modules, 'imported before the preload'\n"
        "t = preload_river()\n"
        "assert t.daemon and t is not threading.current_thread()\n"
        "t.join(60)\n"
        "assert 'river.anomaly' in sys.modules\n"
        "from consumers.core.models.behaviour import BehaviourModel\n"
        "BehaviourModel(3)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
