"""``distillwatch enforce``: the reference enforcement subscriber (flags topic → a database).

Reads Flag v1 records from the flags topic with ``isolation.level=read_committed`` in its own
consumer group and applies them idempotently (by ``flag_id``) to a store: SQLite (default, a
path or ``sqlite:///PATH``) or PostgreSQL (``postgresql://...``, extra ``postgres``). Kafka
offsets are committed only after the database transaction commits. Allow-listed orgs and
accounts are never enforced: their flags become review items. See ``consumers/enforce/store.py``
for the tables and the supersede rules.

    distillwatch enforce [--store S] [--group-id G] [--allow-list FILE] [--until-end]
    distillwatch enforce allow add|remove org:ID|account:ID [--note TEXT] [--store S]
    distillwatch enforce allow list [--store S]

Every option also comes from the environment: ``DISTILLWATCH_ENFORCE_STORE``,
``DISTILLWATCH_ENFORCE_GROUP_ID``, ``DISTILLWATCH_ALLOW_LIST``, and the Kafka connection
(``DISTILLWATCH_BOOTSTRAP_SERVERS``, ``DISTILLWATCH_FLAGS_TOPIC``, ``DISTILLWATCH_SECURITY_PROTOCOL``,
``DISTILLWATCH_SASL_*``, ``DISTILLWATCH_SSL_CA_LOCATION``). Exit 0 on SIGTERM/SIGINT or at the
end (``--until-end``); 1 on a fatal Kafka error (authentication, authorization); 2 on a bad store.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.config import KafkaSettings
from consumers.enforce.store import Store, StoreError


class EnforceSettings(BaseSettings):
    """``DISTILLWATCH_ENFORCE_STORE``, ``DISTILLWATCH_ENFORCE_GROUP_ID``, ``DISTILLWATCH_ALLOW_LIST``..."""

    model_config = SettingsConfigDict(env_prefix="DISTILLWATCH_", extra="ignore")

    enforce_store: str = Field("sqlite:///distillwatch-enforce.db", description="sqlite path/URL or postgresql:// URL")
    enforce_group_id: str = "distillwatch-enforce"
    enforce_batch_size: int = Field(500, ge=1)
    allow_list: str | None = None


def add_store_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="S",
                   help="sqlite:///PATH, a path, or postgresql://... (DISTILLWATCH_ENFORCE_STORE; "
                        "default sqlite:///distillwatch-enforce.db)")


def open_store(args: argparse.Namespace) -> Store:
    url = getattr(args, "store", None) or EnforceSettings().enforce_store
    return Store(url)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_store_argument(p)
    p.add_argument("--bootstrap-servers", metavar="S", help="default 127.0.0.1:9092 (DISTILLWATCH_BOOTSTRAP_SERVERS)")
    p.add_argument("--flags-topic", metavar="T", help="default distillation.flags (DISTILLWATCH_FLAGS_TOPIC)")
    p.add_argument("--group-id", metavar="G", help="default distillwatch-enforce (DISTILLWATCH_ENFORCE_GROUP_ID)")
    p.add_argument("--allow-list", metavar="FILE",
                   help="org:ID / account:ID lines, never enforced (DISTILLWATCH_ALLOW_LIST)")
    p.add_argument("--batch-size", type=int, help="records per DB transaction (default 500)")
    p.add_argument("--until-end", action="store_true", help="stop once caught up with the topic")
    p.add_argument("--max-wait-s", type=float, default=300.0,
                   help="with --until-end: fail when the end is not reached in this time")
    sub = p.add_subparsers(dest="enforce_command", metavar="{allow}")
    allow = sub.add_parser("allow", help="manage the allow-list table")
    allow_sub = allow.add_subparsers(dest="allow_command", required=True)
    for name in ("add", "remove"):
        a = allow_sub.add_parser(name)
        a.add_argument("entry", help="org:ID or account:ID")
        if name == "add":
            a.add_argument("--note", help="why (shown in the audit)")
        add_store_argument(a)
    ls = allow_sub.add_parser("list")
    add_store_argument(ls)


def _allow(args: argparse.Namespace) -> int:
    from consumers.enforce.store import parse_allow_list

    with open_store(args) as store:
        if args.allow_command == "list":
            for kind, ident, note, source in store.allow_list():
                print(f"{kind}:{ident}\t{source}\t{note or ''}")
            return 0
        try:
            [(kind, ident, _)] = parse_allow_list(args.entry)
        except ValueError as e:
            print(f"enforce allow: {e}", file=sys.stderr)
            return 2
        with store.transaction():
            if args.allow_command == "add":
                store.allow_add(kind, ident, args.note)
                print(f"added {kind}:{ident}")
                return 0
            removed = store.allow_remove(kind, ident)
        print(f"removed {kind}:{ident}" if removed else f"{kind}:{ident} was not on the allow-list")
        return 0 if removed else 1


def run(args: argparse.Namespace) -> int:
    if getattr(args, "enforce_command", None) == "allow":
        try:
            return _allow(args)
        except StoreError as e:
            print(f"enforce: {e}", file=sys.stderr)
            return 2
    from consumers.enforce.subscriber import Subscriber, SubscriberOptions

    es = EnforceSettings()
    over = {f: getattr(args, a) for f, a in (("bootstrap_servers", "bootstrap_servers"),
                                             ("flags_topic", "flags_topic"))
            if getattr(args, a, None) is not None}
    kafka = KafkaSettings(**over)
    try:
        store = Store(args.store or es.enforce_store)
    except (StoreError, OSError) as e:
        print(f"enforce: cannot open the store: {e}", file=sys.stderr)
        return 2
    with store:
        allow_file = args.allow_list or es.allow_list
        if allow_file:
            try:
                store.load_allow_file(allow_file)
            except (OSError, ValueError) as e:
                print(f"enforce: allow-list {allow_file}: {e}", file=sys.stderr)
                return 2
        opts = SubscriberOptions(group_id=args.group_id or es.enforce_group_id,
                                 batch_size=args.batch_size or es.enforce_batch_size,
                                 until_end=bool(args.until_end), max_wait_s=args.max_wait_s)
        rc = Subscriber(kafka, store, opts).run()
        if rc:
            print(f"distillwatch enforce: fatal Kafka error reading {kafka.flags_topic!r} on "
                  f"{kafka.bootstrap_servers} (see the enforce_fatal log line)", file=sys.stderr)
        return rc
