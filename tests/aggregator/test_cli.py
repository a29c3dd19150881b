"""`edgefabric label list|set` and `edgefabric models history` on a real store."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.labelling import Labeller
from aggregator.store import HardExampleStore, HistoryEntry
from edgefabric.cli import main
from tests.aggregator.learning_support import hard_example_frame, pool


async def test_label_list_shows_the_queue_and_label_set_takes_a_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = HardExampleStore(tmp_path / "learning")
    labeller = Labeller(store, classify=lambda x: (1, 0.3))
    for x in pool().x[:3]:
        await labeller.handle("site-7", hard_example_frame(x, edge_label=4))
    first = store.pending()[0].id
    store.close()

    assert main(["label", "list", "--data-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert first[:12] in listing and "site-7" in listing and "3 waiting" in listing

    assert main(["label", "set", first[:8], "6", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"{first}: 6"
    main(["label", "list", "--data-dir", str(tmp_path)])
    assert "2 waiting, 1 labelled" in capsys.readouterr().out

    assert main(["label", "set", "000000", "6", "--data-dir", str(tmp_path)]) == 1
    assert "LabelNotFound" in capsys.readouterr().err


def test_models_history_prints_every_decision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = HardExampleStore(tmp_path / "learning")
    for version, deployed, new in (("2", True, 0.95), ("2", False, 0.90)):
        store.record(
            HistoryEntry(
                at=1.8e9,
                model="digits-edge",
                version=version,
                trigger="num_of_samples 600 > 500",
                samples=600,
                eval_size=400,
                old_accuracy=0.91,
                new_accuracy=new,
                deployed=deployed,
                decision="accuracy_delta ...",
            )
        )
    store.close()
    assert main(["models", "history", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("digits-edge") == 2
    assert "yes" in out and "no" in out and "num_of_samples 600 > 500" in out
