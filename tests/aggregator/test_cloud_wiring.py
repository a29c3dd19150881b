"""`edgefabric cloud` with learning enabled: the service runs on the hub it starts."""

from __future__ import annotations

from pathlib import Path

import nats

from aggregator.settings import LearningSettings
from bus.ports import free_port
from cloud_bridge import headers
from edgefabric.cloud import Cloud
from edgefabric.config import CloudConfig, HubSettings
from schemas import topics
from schemas.topics import TrafficClass
from tests.aggregator.learning_support import hard_example_frame, pool
from tests.support import wait_for


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
        nc = await nats.connect(config.hub.url)
        try:
            js = nc.jetstream(timeout=5)
            subject = topics.uplink("site-1", TrafficClass.HARD_EXAMPLES, "hard-examples", "d")
            for i, x in enumerate(pool().x[:5]):
                await js.publish(
                    subject,
                    hard_example_frame(x),
                    headers={headers.MSG_ID: f"he-{i}", headers.EDGE: "site-1"},
                )
        finally:
            await nc.close()
        await wait_for(lambda: labeller.store.counts()["examples"] == 5, 20, what="stored")
        counts = labeller.counters
        assert counts.auto_labelled + counts.queued == 5
        assert counts.auto_labelled >= 3  # the bundled deep model is sure of most digits
    assert (tmp_path / "learning" / "index.db").exists()
