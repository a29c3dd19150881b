"""`edgefabric label list|set`: the people's side of the hard-example label queue.

Both read and write the cloud's learning store directly (``<data-dir>/learning``); the store
is SQLite in WAL mode, so this works while the cloud service runs. With ``--hub`` a label set
here wakes the running learner at once (a core NATS message); without it, the learner counts
the label at its next event (an automatic label, the daily window opening, staleness).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from pathlib import Path

DEFAULT_DATA_DIR = Path("var/cloud")


def learning_dir(args: argparse.Namespace) -> Path:
    """Where the learning store of `--data-dir` lives."""
    return Path(args.data_dir) / "learning"


def _list(args: argparse.Namespace) -> int:
    from aggregator.store import HardExampleStore

    store = HardExampleStore(learning_dir(args))
    try:
        pending = store.pending(args.limit)
        counts = store.counts()
    finally:
        store.close()
    print(f"{'ID':<14} {'EDGE':<14} {'MODEL':<16} {'REASON':<16} {'EDGE SAID':<10} RECEIVED")
    for e in pending:
        said = f"{e.edge_label} ({e.edge_confidence:.2f})" if e.edge_label is not None else "-"
        when = dt.datetime.fromtimestamp(e.received_at).isoformat(timespec="seconds")
        model = f"{e.model}@{e.model_version}"
        print(f"{e.id[:12]:<14} {e.edge:<14} {model:<16} {e.reason:<16} {said:<10} {when}")
    print(
        f"{counts['unlabelled']} waiting, {counts['labelled']} labelled, "
        f"{counts['bytes']} bytes stored, {counts['evicted']} evicted"
    )
    return 0


def _set(args: argparse.Namespace) -> int:
    from aggregator.store import HardExampleStore

    store = HardExampleStore(learning_dir(args))
    try:
        store.set_label(args.id, args.label, source="human")
        full = store.resolve(args.id)
    finally:
        store.close()
    print(f"{full}: {args.label}")
    if args.hub:
        asyncio.run(_notify(args.hub))
    return 0


async def _notify(hub_url: str) -> None:
    """Wake the running learner; if the hub is away it counts the label at its next event."""
    import nats

    from schemas import topics

    try:
        async with asyncio.timeout(5):
            nc = await nats.connect(hub_url, connect_timeout=2, allow_reconnect=False)
            try:
                await nc.publish(topics.learning_labelled(), b"")
                await nc.flush()
            finally:
                await nc.close()
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        print(f"learner not notified ({exc}); it will count the label at its next event")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``label`` and its subcommands."""
    label = sub.add_parser("label", help="hard examples waiting for a person's label")
    actions = label.add_subparsers(dest="label_command", required=True)

    listing = actions.add_parser("list", help="the label queue, oldest first")
    listing.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="cloud data dir")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=_list)

    setting = actions.add_parser("set", help="label one example (ID or a unique prefix >= 6)")
    setting.add_argument("id")
    setting.add_argument("label", type=int)
    setting.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="cloud data dir")
    setting.add_argument("--hub", help="hub URL: wake the running learner at once")
    setting.set_defaults(handler=_set)
