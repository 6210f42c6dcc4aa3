"""Reference enforcement subscriber: applies flags to a store (SQLite / PostgreSQL), idempotently.

:mod:`consumers.enforce.store` (tables, supersede and allow-list rules), :mod:`.subscriber` (the
Kafka side: read_committed, DB commit before offset commit), :mod:`.cli` (``distillwatch
enforce``) and :mod:`.inspect_cli` (``distillwatch inspect``).
"""
