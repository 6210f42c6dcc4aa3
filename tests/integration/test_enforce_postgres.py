"""The enforcement store on a real PostgreSQL (a throw-away cluster started by the fixture).

The same checks as the SQLite unit tests: applying the same stream of flags (real detector flags,
malformed records, an allow-listed org) twice leaves every table identical; the supersede rules
hold; and the store gives the same tables as SQLite for the same input.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.enforce.store import Store
from tests.enforce_cases import check_idempotent, flag, stream
from tests.pg_helpers import PgCluster, start_pg


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    try:
        cluster = start_pg()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_store(pg: PgCluster) -> Iterator[Store]:
    import psycopg

    db = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {db}")
    s = Store(pg.url.rsplit("/", 1)[0] + "/" + db, clock=lambda: 7)
    yield s
    s.close()


def test_postgres_applying_twice_is_identical(pg_store: Store) -> None:
    check_idempotent(pg_store)


def test_postgres_rules(pg_store: Store) -> None:
    r = pg_store.apply_many([(flag("a", "review", 100), None), (flag("a", "suspend", 200), None),
                             (flag("a", "review", 300), None), (flag("a", "throttle", 150), None)])
    assert [x.outcome for x in r] == ["applied", "escalated", "no_downgrade", "stale"]


def test_postgres_equals_sqlite(pg_store: Store, tmp_path: Path) -> None:
    lite = Store(str(tmp_path / "e.db"), clock=lambda: 7)
    for s in (pg_store, lite):
        with s.transaction():
            s.allow_add("org", "org-partner", "contract partner")
        s.apply_many(stream())
    a, b = pg_store.dump(), lite.dump()
    assert a.keys() == b.keys()
    for t in a:
        norm = lambda rows: sorted((tuple(float(v) if isinstance(v, float) else v for v in r) for r in rows), key=repr)  # noqa: E731
        assert norm(a[t]) == norm(b[t]), t
