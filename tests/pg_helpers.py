"""A throw-away PostgreSQL cluster for tests: ``initdb`` in a temporary dir, a free port, trust auth.

Uses the newest ``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql`` package, which
``.ci/run`` installs) or ``initdb`` on the PATH. initdb refuses to run as root, so as root the
cluster belongs to the ``postgres`` user (created by the Debian package) and runs through
``runuser``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.secure_kafka import free_port


def pg_bin() -> Path | None:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
    if dirs:
        return Path(dirs[-1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PgCluster:
    url: str
    data: Path
    tmp: Path
    bin: Path
    prefix: list[str]

    def stop(self) -> None:
        subprocess.run(self.prefix + [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                      "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_pg() -> PgCluster:
    b = pg_bin()
    if b is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    tmp = Path(tempfile.mkdtemp(prefix="distillwatch-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = tmp / "data", free_port()
    run = lambda args, **kw: subprocess.run(prefix + args, capture_output=True, text=True, timeout=120, **kw)  # noqa: E731
    r = run([str(b / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-instructions"])
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {r.stdout}\n{r.stderr}")
    opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
    r = run([str(b / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(tmp / "pg.log"), "-w", "-t", "60", "start"])
    if r.returncode != 0:
        log = (tmp / "pg.log").read_text() if (tmp / "pg.log").exists() else ""
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {r.stdout}\n{r.stderr}\n{log}")
    return PgCluster(f"postgresql://postgres@127.0.0.1:{port}/postgres", data, tmp, b, prefix)
