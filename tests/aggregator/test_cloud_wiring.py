"""`edgefabric cloud` with learning enabled: the service runs on the hub it starts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import nats
import pytest

from aggregator.service import build_learning_service
from aggregator.settings import LearningSettings
from aggregator.triggers import Trigger
from bus.ports import free_port
from cloud_bridge import headers
from cloud_bridge.downlink import CloudPublisher
from edgefabric.cli import main
from edgefabric.cloud import Cloud
from edgefabric.config import CloudConfig, HubSettings
from schemas import topics
from schemas.frames import unpack
from schemas.models import ModelUpdate
from schemas.signing import (
    ModelIntegrityError,
    TrustedKeys,
    generate_signing_key,
    verify_model_update,
    write_key_pair,
)
from schemas.topics import TrafficClass
from tests.aggregator.learning_support import hard_example_frame, pool
from tests.support import wait_for


async def publish_hard_examples(hub_url: str, count: int) -> None:
    """Put `count` hard examples into the uplink stream as site-1's bridge would."""
    nc = await nats.connect(hub_url)
    try:
        js = nc.jetstream(timeout=5)
        subject = topics.uplink("site-1", TrafficClass.HARD_EXAMPLES, "hard-examples", "d")
        for i, x in enumerate(pool().x[:count]):
            await js.publish(
                subject,
                hard_example_frame(x),
                headers={headers.MSG_ID: f"he-{i}", headers.EDGE: "site-1"},
            )
    finally:
        await nc.close()


async def test_cloud_with_learning_enabled_stores_and_labels_arriving_hard_examples(
    tmp_path: Path,
) -> None:
    config = CloudConfig(
        data_dir=tmp_path,
        hub=HubSettings(port=free_port(), leafnode_port=free_port(), monitor_port=free_port()),
        learning=LearningSettings(enabled=True, auto_label_confidence=0.5),
    )
    async with Cloud(config) as cloud:
        assert cloud.learning is not None
        labeller = cloud.learning.labeller
        await publish_hard_examples(config.hub.url, 5)
        await wait_for(lambda: labeller.store.counts()["examples"] == 5, 20, what="stored")
        counts = labeller.counters
        assert counts.auto_labelled + counts.queued == 5
        assert counts.auto_labelled >= 3  # the bundled deep model is sure of most digits
    assert (tmp_path / "learning" / "index.db").exists()


async def test_a_label_set_by_a_person_wakes_the_running_learner(tmp_path: Path) -> None:
    # Nothing is auto-labelled (confidence 1.0 is never reached): only the person's label
    # can make the trigger (>= 1 new sample) fire, and only the CLI's message can wake it.
    config = CloudConfig(
        data_dir=tmp_path,
        hub=HubSettings(port=free_port(), leafnode_port=free_port(), monitor_port=free_port()),
        learning=LearningSettings(
            enabled=True,
            auto_label_confidence=1.0,
            trigger=Trigger(operator=">=", num_of_samples=1),
        ),
    )
    async with Cloud(config) as cloud:
        assert cloud.learning is not None
        store = cloud.learning.labeller.store
        await publish_hard_examples(config.hub.url, 2)
        await wait_for(lambda: len(store.pending()) == 2, 20, what="queued")
        assert store.history() == []
        example = store.pending()[0].id
        argv = ["label", "set", example[:8], "5", "--data-dir", str(tmp_path)]
        assert await asyncio.to_thread(main, [*argv, "--hub", config.hub.url]) == 0
        await wait_for(lambda: len(store.history()) == 1, 60, what="retrained on the event")
        (entry,) = store.history()
        assert entry.samples == 1 and entry.trigger == "num_of_samples 1 >= 1"


class _RecordingPublisher:
    """Stands in for the `CloudPublisher` (the downlink is tested elsewhere): keeps frames."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def publish(
        self, edge: str | None, kind: str, *tokens: str, payload: bytes, message_id: str = ""
    ) -> None:
        self.frames.append(payload)


async def test_a_configured_signing_key_signs_every_model_the_service_deploys(
    tmp_path: Path,
) -> None:
    key = generate_signing_key()
    write_key_pair(key, tmp_path / "cloud.pem", tmp_path / "cloud.pub")
    publisher = _RecordingPublisher()
    service = build_learning_service(
        "nats://127.0.0.1:1",
        cast(CloudPublisher, publisher),
        data_dir=tmp_path,
        settings=LearningSettings(signing_key=tmp_path / "cloud.pem"),
    )
    learner = service.learner
    await learner._publish(learner.deployed, "2", 0.9, 0.95)  # what a passed gate calls
    (frame,) = publisher.frames
    header, model = unpack(ModelUpdate, frame)
    trusted = TrustedKeys.from_files([tmp_path / "cloud.pub"])
    verify_model_update(
        name=header.name,
        version=header.version,
        sha256=header.sha256,
        signature=header.signature,
        trusted=trusted,
        model_bytes=model,
    )
    with pytest.raises(ModelIntegrityError):
        verify_model_update(
            name=header.name,
            version="3",
            sha256=header.sha256,
            signature=header.signature,
            trusted=trusted,
            model_bytes=model,
        )
