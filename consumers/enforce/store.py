"""The enforcement store: current state per account, an append-only audit, an allow-list.

One store, two back ends with the same tables and the same SQL (``INSERT ... ON CONFLICT``):

* SQLite, the embedded default: ``sqlite:///path/to.db`` or a plain path;
* PostgreSQL: ``postgresql://user@host:port/db`` (``pip install 'distillwatch[postgres]'``,
  psycopg 3).

Tables
------
``enforcement_state``  one row per account: the action in force, its campaign, the ``flag_id`` and
                       ``decided_at_ms`` of the flag that set it, whether the account is allow-listed.
``audit``              append-only: one row per *distinct* flag received (keyed by ``flag_id``) and
                       one per distinct malformed record (keyed by a hash of its bytes): what the
                       flag recommended, what was applied, the outcome and why in words.
``allow_list``         orgs and accounts that must never be enforced (``org`` / ``account``).

Rules (shared/CONTRACT.md and the README's "For enforcement teams")
-------------------------------------------------------------------
* **Idempotent by flag_id.** A flag whose ``flag_id`` is already in the audit is a duplicate
  (the topic read twice, a replay, a redelivery after a crash between the DB commit and the
  Kafka offset commit): it is *skipped* — no row is written, only the run's ``duplicate``
  counter moves — so applying the same flags any number of times leaves the database identical.
  Malformed records are likewise recorded once per distinct content.
* **A later flag supersedes an earlier one** (by ``decided_at_ms``, event time): escalation
  (``review`` → ``throttle`` → ``suspend``) → ``escalated``; same action, another campaign →
  ``campaign_changed``; same action and campaign → ``updated`` (flag id and time move on).
* **Never step down on their own**: a later flag with a lower action than the one in force is
  audited as ``no_downgrade`` and leaves the state alone (lifting a sanction is an analyst's
  decision, outside this subscriber).
* **Out of order**: a flag decided before the one in force (``decided_at_ms`` smaller) is audited
  as ``stale`` and changes nothing.
* **Allow-list**: a flag for an allow-listed account or org becomes a review item — the state's
  action is ``review`` (``allow_listed`` = 1) and the audit says which entry matched
  (``allow_listed``); the recommended action stays in the audit row.
* **Malformed flag** (not JSON, not Flag v1, unknown schema version): audited as ``malformed`` with
  the validation error, counted, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from consumers.contract.flags import ACTION_RANK, Flag

OUTCOMES = ("applied", "escalated", "campaign_changed", "updated", "no_downgrade", "stale",
            "allow_listed", "malformed")

_TABLES = ("enforcement_state", "audit", "allow_list")


def _ddl(serial_pk: str) -> list[str]:
    return [
        """CREATE TABLE IF NOT EXISTS enforcement_state (
            account_id     TEXT PRIMARY KEY,
            org_id         TEXT,
            action         TEXT NOT NULL,
            campaign_id    TEXT,
            campaign_size  INTEGER,
            flag_id        TEXT NOT NULL,
            decided_at_ms  BIGINT NOT NULL,
            score          DOUBLE PRECISION,
            allow_listed   INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX IF NOT EXISTS enforcement_state_campaign ON enforcement_state (campaign_id)",
        f"""CREATE TABLE IF NOT EXISTS audit (
            seq             {serial_pk},
            audit_key       TEXT NOT NULL UNIQUE,
            flag_id         TEXT,
            account_id      TEXT,
            org_id          TEXT,
            campaign_id     TEXT,
            campaign_size   INTEGER,
            flag_action     TEXT,
            applied_action  TEXT,
            outcome         TEXT NOT NULL,
            why             TEXT NOT NULL,
            score           DOUBLE PRECISION,
            reasons         TEXT,
            decided_at_ms   BIGINT,
            source          TEXT,
            received_at_ms  BIGINT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS audit_account ON audit (account_id)",
        "CREATE INDEX IF NOT EXISTS audit_campaign ON audit (campaign_id)",
        """CREATE TABLE IF NOT EXISTS allow_list (
            kind         TEXT NOT NULL,
            id           TEXT NOT NULL,
            note         TEXT,
            source       TEXT NOT NULL,
            PRIMARY KEY (kind, id)
        )""",
    ]


@dataclass(frozen=True, slots=True)
class Result:
    """What applying one record did (``duplicate``: skipped, nothing written)."""

    outcome: str  # one of OUTCOMES, or "duplicate"
    account_id: str | None
    applied_action: str | None
    why: str


class StoreError(RuntimeError):
    """The store URL or the database is not usable."""


def parse_allow_list(text: str) -> list[tuple[str, str, str | None]]:
    """Lines ``org:ID`` or ``account:ID`` (a bare ID is an account), ``#`` comments.

    >>> parse_allow_list("org:acme  # our partner\\naccount:a-1\\n\\nb-2")
    [('org', 'acme', 'our partner'), ('account', 'a-1', None), ('account', 'b-2', None)]
    """
    out: list[tuple[str, str, str | None]] = []
    for raw in text.splitlines():
        line, _, comment = raw.partition("#")
        line = line.strip()
        if not line:
            continue
        kind, sep, ident = line.partition(":")
        if not sep:
            kind, ident = "account", line
        kind, ident = kind.strip().lower(), ident.strip()
        if kind not in ("org", "account") or not ident:
            raise ValueError(f"allow-list line {raw!r}: expected org:ID or account:ID")
        out.append((kind, ident, comment.strip() or None))
    return out


class Store:
    """Enforcement store on SQLite or PostgreSQL (see the module docstring for the rules)."""

    def __init__(self, url: str, clock: Callable[[], int] | None = None):
        self.url = url
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.counters: Counter[str] = Counter()
        if url.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg
            except ImportError as e:  # pragma: no cover - depends on the extra
                raise StoreError("PostgreSQL needs psycopg: pip install 'distillwatch[postgres]'") from e
            self.dialect = "postgresql"
            try:
                self._conn: Any = psycopg.connect(url, autocommit=False)
            except psycopg.Error as e:
                raise StoreError(f"cannot connect to PostgreSQL: {e}") from e
            serial = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
        else:
            self.dialect = "sqlite"
            path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
            if path.startswith("sqlite:"):
                raise StoreError(f"unsupported store URL {url!r} (sqlite:///PATH, a path, or postgresql://...)")
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
        with self.transaction():
            for stmt in _ddl(serial):
                self._x(stmt)

    # --- plumbing ---------------------------------------------------------------------------

    def _x(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        return self._conn.execute(sql, tuple(params))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One database transaction: commits on success, rolls back on an exception."""
        if self.dialect == "sqlite":
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        else:
            try:
                yield
            except BaseException:
                self._conn.rollback()
                raise
            self._conn.commit()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- allow-list -------------------------------------------------------------------------

    def allow_add(self, kind: str, ident: str, note: str | None = None, source: str = "cli") -> None:
        if kind not in ("org", "account"):
            raise ValueError("kind must be 'org' or 'account'")
        self._x("INSERT INTO allow_list (kind, id, note, source) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, id) DO UPDATE SET note = excluded.note, source = excluded.source",
                (kind, ident, note, source))

    def allow_remove(self, kind: str, ident: str) -> bool:
        cur = self._x("DELETE FROM allow_list WHERE kind = ? AND id = ?", (kind, ident))
        return bool(cur.rowcount)

    def allow_list(self) -> list[tuple[str, str, str | None, str]]:
        return [tuple(r) for r in self._x(
            "SELECT kind, id, note, source FROM allow_list ORDER BY kind, id").fetchall()]

    def load_allow_file(self, path: str) -> int:
        """Make the ``source='file'`` entries exactly the file's (CLI-managed ones are kept)."""
        entries = parse_allow_list(Path(path).read_text(encoding="utf-8"))
        with self.transaction():
            self._x("DELETE FROM allow_list WHERE source = 'file'")
            for kind, ident, note in entries:
                self._x("INSERT INTO allow_list (kind, id, note, source) VALUES (?, ?, ?, 'file') "
                        "ON CONFLICT (kind, id) DO NOTHING", (kind, ident, note))
        return len(entries)

    def _allow_match(self, account_id: str, org_id: str | None) -> tuple[str, str, str | None] | None:
        row = self._x("SELECT kind, id, note FROM allow_list WHERE (kind = 'account' AND id = ?) "
                      "OR (kind = 'org' AND id = ?) ORDER BY kind", (account_id, org_id or "")).fetchone()
        return tuple(row) if row else None  # type: ignore[return-value]

    # --- applying flags ---------------------------------------------------------------------

    def apply_many(self, records: Iterable[tuple[bytes | None, str | None]]) -> list[Result]:
        """Apply ``(value, source)`` records in order in ONE transaction (committed on return)."""
        with self.transaction():
            return [self.apply(value, source) for value, source in records]

    def apply(self, value: bytes | None, source: str | None = None) -> Result:
        """Apply one record (raw Flag v1 bytes) inside the caller's transaction."""
        try:
            flag = Flag.model_validate_json(value or b"")
        except ValidationError as e:
            return self._malformed(value, source, _short_error(e))
        if self._x("SELECT 1 FROM audit WHERE audit_key = ?", (flag.flag_id,)).fetchone():
            self.counters["duplicate"] += 1
            return Result("duplicate", flag.account_id, None, f"flag {flag.flag_id} already applied")
        cur = self._x("SELECT action, campaign_id, decided_at_ms, flag_id, allow_listed FROM "
                      "enforcement_state WHERE account_id = ?", (flag.account_id,)).fetchone()
        allow = self._allow_match(flag.account_id, flag.org_id)
        outcome, applied, why = self._decide(flag, cur, allow)
        if applied is not None:
            self._x(
                "INSERT INTO enforcement_state (account_id, org_id, action, campaign_id, campaign_size, "
                "flag_id, decided_at_ms, score, allow_listed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (account_id) DO UPDATE SET org_id = excluded.org_id, action = excluded.action, "
                "campaign_id = excluded.campaign_id, campaign_size = excluded.campaign_size, "
                "flag_id = excluded.flag_id, decided_at_ms = excluded.decided_at_ms, "
                "score = excluded.score, allow_listed = excluded.allow_listed",
                (flag.account_id, flag.org_id, applied, flag.campaign_id, flag.campaign_size, flag.flag_id,
                 flag.decided_at_ms, flag.score, 1 if allow else 0))
        reasons = json.dumps([r.model_dump() for r in flag.reasons], sort_keys=True)
        self._x(
            "INSERT INTO audit (audit_key, flag_id, account_id, org_id, campaign_id, campaign_size, "
            "flag_action, applied_action, outcome, why, score, reasons, decided_at_ms, source, received_at_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (audit_key) DO NOTHING",
            (flag.flag_id, flag.flag_id, flag.account_id, flag.org_id, flag.campaign_id, flag.campaign_size,
             flag.action, applied, outcome, why, flag.score, reasons, flag.decided_at_ms, source,
             self.clock()))
        self.counters[outcome] += 1
        return Result(outcome, flag.account_id, applied, why)

    @staticmethod
    def _decide(flag: Flag, cur: Sequence[Any] | None,
                allow: tuple[str, str, str | None] | None) -> tuple[str, str | None, str]:
        """(outcome, action to write or None to leave the state alone, why)."""
        if cur is not None and flag.decided_at_ms < int(cur[2]):
            return ("stale", None, f"decided at {flag.decided_at_ms}, before the flag in force "
                                   f"({cur[3]}, decided at {cur[2]}): out of order, state unchanged")
        if allow is not None:
            kind, ident, note = allow
            return ("allow_listed", "review",
                    f"{kind} {ident} is on the allow-list{f' ({note})' if note else ''}: "
                    f"recommended {flag.action} becomes a review item")
        if cur is None:
            return ("applied", flag.action, f"first flag for the account: {flag.action}")
        cur_action, cur_campaign = str(cur[0]), cur[1]
        if bool(cur[4]):  # was allow-listed, no longer is: apply as a fresh decision
            return ("applied", flag.action, f"no longer allow-listed: {flag.action}")
        new_rank, cur_rank = ACTION_RANK[flag.action], ACTION_RANK.get(cur_action, 0)
        if new_rank > cur_rank:
            return ("escalated", flag.action, f"escalation {cur_action} -> {flag.action}")
        if new_rank < cur_rank:
            return ("no_downgrade", None, f"recommends {flag.action}, lower than {cur_action} in force: "
                                          "enforcement never steps down on its own, state unchanged")
        if flag.campaign_id != cur_campaign:
            return ("campaign_changed", flag.action,
                    f"campaign {cur_campaign or 'none'} -> {flag.campaign_id or 'none'}, action {flag.action}")
        return ("updated", flag.action, f"same action {flag.action} and campaign, later decision")

    def _malformed(self, value: bytes | None, source: str | None, error: str) -> Result:
        key = "malformed:" + hashlib.sha256(value or b"").hexdigest()
        self.counters["malformed"] += 1
        self._x(
            "INSERT INTO audit (audit_key, outcome, why, source, received_at_ms) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (audit_key) DO NOTHING",
            (key, "malformed", f"not a valid Flag v1: {error}", source, self.clock()))
        return Result("malformed", None, None, error)

    # --- reading ----------------------------------------------------------------------------

    def dump(self, with_received_at: bool = True) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, in a stable order (for tests and comparisons)."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        for t in _TABLES:
            rows = [tuple(r) for r in self._x(f"SELECT * FROM {t}").fetchall()]  # noqa: S608
            cols = [d[0] for d in self._x(f"SELECT * FROM {t} LIMIT 0").description]
            if not with_received_at and "received_at_ms" in cols:
                i = cols.index("received_at_ms")
                rows = [r[:i] + r[i + 1:] for r in rows]
            out[t] = sorted(rows, key=repr)
        return out

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self._x(sql, params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def account_view(self, account_id: str) -> dict[str, Any]:
        state = self.rows("SELECT * FROM enforcement_state WHERE account_id = ?", (account_id,))
        history = self.rows("SELECT * FROM audit WHERE account_id = ? ORDER BY decided_at_ms, seq",
                            (account_id,))
        for h in history:
            h["reasons"] = json.loads(h["reasons"]) if h.get("reasons") else []
        allow = self._allow_match(account_id, state[0]["org_id"] if state else None)
        return {"account_id": account_id, "state": state[0] if state else None,
                "allow_listed": list(allow) if allow else None, "history": history}

    def campaign_view(self, campaign_id: str) -> dict[str, Any]:
        members = self.rows(
            "SELECT account_id, org_id, action, campaign_size, flag_id, decided_at_ms, score, allow_listed "
            "FROM enforcement_state WHERE campaign_id = ? ORDER BY account_id", (campaign_id,))
        history = self.rows(
            "SELECT account_id, flag_id, flag_action, applied_action, outcome, campaign_size, decided_at_ms, "
            "reasons, why FROM audit WHERE campaign_id = ? ORDER BY decided_at_ms, seq", (campaign_id,))
        codes: Counter[str] = Counter()
        for h in history:
            h["reasons"] = json.loads(h["reasons"]) if h.get("reasons") else []
            codes.update({r["code"] for r in h["reasons"]})
        by_action = Counter(m["action"] for m in members)
        return {"campaign_id": campaign_id, "members": members,
                "actions": dict(sorted(by_action.items())),
                "accounts_ever_flagged": len({h["account_id"] for h in history}),
                "reason_codes": dict(codes.most_common()), "history": history}


def _short_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "value"
        parts.append(f"{loc}: {err.get('msg', '')}")
    more = f" (+{e.error_count() - 3} more)" if e.error_count() > 3 else ""
    return "; ".join(parts) + more
