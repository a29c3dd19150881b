"""`edgefabric models history`: every retraining decision, deployed or not, and why."""

from __future__ import annotations

import argparse
import datetime as dt

from edgefabric.commands.label import learning_dir


def print_history(args: argparse.Namespace) -> int:
    """Print the learning store's retraining history (handler of `models history`)."""
    from aggregator.store import HardExampleStore

    store = HardExampleStore(learning_dir(args))
    try:
        entries = store.history(args.model)
    finally:
        store.close()
    print(f"{'WHEN':<20} {'MODEL':<14} {'VER':<5} {'OLD':>6} {'NEW':>6} {'EVAL':>5} DEPLOYED")
    for e in entries:
        when = dt.datetime.fromtimestamp(e.at).isoformat(timespec="seconds")
        print(
            f"{when:<20} {e.model:<14} {e.version:<5} {e.old_accuracy:>6.3f} "
            f"{e.new_accuracy:>6.3f} {e.eval_size:>5} {'yes' if e.deployed else 'no'}"
        )
        print(f"{'':<20} trigger: {e.trigger}; gate: {e.decision}")
    if not entries:
        print("no retraining yet")
    return 0
