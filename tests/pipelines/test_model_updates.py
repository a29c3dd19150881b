"""Model updates at the edge over a real broker: hot swap under load, refusals, rollback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from bus.mqtt import MqttClient
from edgefabric.commands.models import read_status, rollback, update_frame
from pipelines.anomaly_model import build_anomaly_onnx, train_anomaly_model
from pipelines.digits import bundled_models, load_digits_split
from pipelines.hem import HemSettings
from pipelines.model_updates import ModelUpdater
from pipelines.offload import OffloadService
from pipelines.offload_client import OffloadClient
from pipelines.offload_settings import OffloadModelSettings, OffloadSettings
from pipelines.settings import ModelUpdateSettings, StreamingPipelineSettings
from pipelines.streaming import StreamingPipeline, default_model
from schemas import topics
from schemas.codec import decode, encode
from schemas.frames import pack
from schemas.inference import InferenceResult
from schemas.models import ModelCommand, ModelState, ModelStatus, ModelUpdate
from schemas.offload import OffloadResponse
from schemas.readings import Reading
from schemas.status import DeadLetter
from tests.support import wait_for

EDGE, CLOUD = bundled_models()
OFFLOAD = OffloadSettings(
    models=[OffloadModelSettings(cloud_model=None, hem=HemSettings(method="EdgeOnly"))]
)


class Statuses:
    def __init__(self) -> None:
        self.seen: list[ModelStatus] = []

    def latest(self) -> ModelStatus:
        return self.seen[-1]


@contextlib.asynccontextmanager
async def edge(
    url: str, state_dir: Path
) -> AsyncIterator[tuple[MqttClient, OffloadService, ModelUpdater, Statuses]]:
    """An offload service serving digits-edge v1, its updater, and the statuses it publishes."""
    statuses = Statuses()
    async with (
        MqttClient(url, client_id="edge") as bus,
        OffloadService(OFFLOAD, bus=bus, nc=None) as offload,
        bus.subscribe(topics.model_status("digits-edge")) as sub,
        ModelUpdater(
            ModelUpdateSettings(), bus=bus, slots=offload.slots(), state_dir=state_dir
        ) as updater,
        asyncio.TaskGroup() as tg,
    ):

        async def collect() -> None:
            async for message in sub:
                statuses.seen.append(decode(ModelStatus, message.payload))

        task = tg.create_task(collect())
        try:
            yield bus, offload, updater, statuses
        finally:
            task.cancel()


async def test_a_model_update_swaps_in_under_load_with_zero_failed_inferences(
    broker_url: str, tmp_path: Path
):
    x = load_digits_split().x_test
    answers: list[OffloadResponse] = []
    stop = asyncio.Event()
    async with (
        edge(broker_url, tmp_path) as (bus, offload, updater, statuses),
        OffloadClient(bus, name="phone") as phone,
    ):

        async def load(worker: int) -> None:
            i = worker
            while not stop.is_set():
                answers.append(await phone.infer("digits", x[i % len(x)], timeout=10))
                i += 8

        async with asyncio.TaskGroup() as tg:
            for worker in range(8):
                tg.create_task(load(worker))
            await wait_for(lambda: len(answers) >= 50, what="load before the update")
            # The cloud's deep model stands in for a retrained edge model: same input/output.
            frame = update_frame("digits-edge", "2", CLOUD.read_bytes())
            await bus.publish(topics.model_update("digits-edge"), frame, retain=True)
            await wait_for(lambda: offload.slot("digits").version == "2", what="the swap")
            swapped_at = len(answers)
            await wait_for(lambda: len(answers) >= swapped_at + 50, what="load after the update")
            stop.set()
        await wait_for(lambda: statuses.seen and statuses.latest().active_version == "2")
    versions = [a.answer.edge_result.model_version for a in answers if a.answer]
    assert all(a.error is None for a in answers), [a.error for a in answers if a.error]
    assert len(versions) == len(answers)
    assert {"1", "2"} <= set(versions)
    assert versions.index("2") > 0 and "1" not in versions[versions.index("2") + 20 :]
    assert statuses.latest().state is ModelState.ACTIVE
    assert statuses.latest().previous_version == "1"
    assert updater.applied == 1


def _bad_frames() -> dict[str, tuple[bytes, str]]:
    good = EDGE.read_bytes()
    wrong_digest = pack(
        ModelUpdate(name="digits-edge", version="3", sha256="0" * 64, size=len(good)), good
    )
    narrow = train_anomaly_model(np.random.default_rng(0).normal(size=(8, 32)))
    return {
        "sha": (wrong_digest, "sha256 mismatch"),
        "4": (update_frame("digits-edge", "4", b"\x08\x01garbage that is no onnx"), "cannot load"),
        "5": (update_frame("digits-edge", "5", build_anomaly_onnx(narrow)), "32 wide"),
    }


async def test_a_corrupt_or_incompatible_model_is_refused_reported_and_never_served(
    amqtt_url: str, tmp_path: Path
):
    x = load_digits_split().x_test
    async with (
        edge(amqtt_url, tmp_path) as (bus, offload, updater, statuses),
        OffloadClient(bus, name="phone") as phone,
    ):
        await phone.infer("digits", x[0])  # a real input to validate candidates on
        for frame, reason in _bad_frames().values():
            before = len(statuses.seen)
            await bus.publish(topics.model_update("digits-edge"), frame, retain=True)
            await wait_for(lambda n=before: len(statuses.seen) > n, what=f"refusal: {reason}")
            assert statuses.latest().state is ModelState.REJECTED
            assert reason in statuses.latest().reason
            assert statuses.latest().active_version == "1"
        after = await phone.infer("digits", x[1])
    assert after.error is None
    assert after.answer is not None and after.answer.edge_result.model_version == "1"
    assert updater.rejected == 3 and updater.applied == 0


async def test_rollback_is_one_message_and_a_restart_does_not_bring_the_bad_version_back(
    mosquitto_url: str, tmp_path: Path
):
    async with edge(mosquitto_url, tmp_path) as (bus, offload, _, statuses):
        frame = update_frame("digits-edge", "2", CLOUD.read_bytes())
        await bus.publish(topics.model_update("digits-edge"), frame, retain=True)
        await wait_for(lambda: offload.slot("digits").version == "2", what="the swap")
        answer = await rollback(bus, "digits-edge")
        assert offload.slot("digits").version == "1"
        nothing_left = await rollback(bus, "digits-edge")
    assert answer.state is ModelState.ROLLED_BACK and answer.active_version == "1"
    assert answer.reason == "rolled back from 2"
    assert nothing_left.state is ModelState.REJECTED and nothing_left.active_version == "1"

    # A restart on the same data dir: the retained v2 update is still on the broker, and the
    # edge does not take the version it was told to roll back from.
    async with edge(mosquitto_url, tmp_path) as (bus, offload, updater, _):
        await wait_for(lambda: updater.ignored >= 1, what="the retained v2 update seen")
        (status,) = await read_status(bus, "digits-edge")
        assert offload.slot("digits").version == "1"
    assert status.active_version == "1" and status.state is ModelState.ACTIVE


async def test_a_streaming_pipeline_swaps_mid_stream_and_every_window_gets_a_result(
    amqtt_url: str,
):
    settings = StreamingPipelineSettings(name="vib", property="vibration", window=4, hop=1)
    versions: list[str] = []
    sent = 400
    expected = sent + 4 - 3  # hop 1 after the first full window of 4
    async with (
        MqttClient(amqtt_url, client_id="edge") as bus,
        StreamingPipeline(settings, bus=bus) as pipeline,
        ModelUpdater(
            ModelUpdateSettings(), bus=bus, slots={settings.model_name: pipeline.slot}
        ) as updater,
        bus.subscribe(topics.results_filter("vib"), maxsize=expected) as results,
    ):
        v2 = settings.model_copy(update={"model_version": "2"})
        frame = update_frame(settings.model_name, "2", default_model(v2))
        for i in range(sent):
            if i == sent // 2:
                await bus.publish(topics.model_update(settings.model_name), frame)
            reading = Reading(device="m-1", property="vibration", value=0.01 * (i % 5))
            await bus.publish(topics.reading("m-1", "vibration"), encode(reading))
        await wait_for(lambda: updater.applied == 1, what="the update applied")
        for i in range(4):  # published after the swap: these must run on v2
            reading = Reading(device="m-1", property="vibration", value=0.01 * i)
            await bus.publish(topics.reading("m-1", "vibration"), encode(reading))
        async with asyncio.timeout(20):
            async for message in results:
                versions.append(decode(InferenceResult, message.payload).model_version)
                if len(versions) == expected:
                    break
    assert pipeline.rejected == 0 and pipeline.dropped == 0
    assert versions[0] == "1" and versions[-1] == "2"
    switch = versions.index("2")
    assert set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}


def test_the_cli_offers_status_rollback_push_and_the_clouds_history():
    from edgefabric.cli import build_parser

    parser = build_parser()
    for argv in (
        ["models", "status", "--broker", "mqtt://127.0.0.1:1"],
        ["models", "rollback", "digits-edge", "--broker", "mqtt://127.0.0.1:1"],
        ["models", "push", "digits-edge", "--version", "3", "--file", str(EDGE)],
        ["models", "history"],
    ):
        assert callable(parser.parse_args(argv).handler)


async def test_with_trusted_keys_only_a_signed_update_is_taken(amqtt_url: str, tmp_path: Path):
    from edgefabric.commands.models import signed_update_frame
    from schemas.signing import generate_signing_key, write_key_pair

    write_key_pair(generate_signing_key(), tmp_path / "cloud.key", tmp_path / "cloud.pub")
    write_key_pair(generate_signing_key(), tmp_path / "other.key", tmp_path / "other.pub")
    settings = ModelUpdateSettings(trusted_keys=[tmp_path / "cloud.pub"])
    model = CLOUD.read_bytes()
    async with (
        MqttClient(amqtt_url, client_id="edge") as bus,
        OffloadService(OFFLOAD, bus=bus, nc=None) as offload,
        ModelUpdater(settings, bus=bus, slots=offload.slots()) as updater,
    ):
        for version, frame in (
            ("2", update_frame("digits-edge", "2", model)),
            ("3", signed_update_frame("digits-edge", "3", model, tmp_path / "other.key")),
        ):
            await bus.publish(topics.model_update("digits-edge"), frame)
            await wait_for(lambda v=version: v in updater.refused_versions.get("digits-edge", ()))
        (refused,) = await read_status(bus, "digits-edge")
        signed = signed_update_frame("digits-edge", "4", model, tmp_path / "cloud.key")
        await bus.publish(topics.model_update("digits-edge"), signed)
        await wait_for(lambda: offload.slot("digits").version == "4", what="the signed update")
    assert updater.rejected == 2 and updater.applied == 1
    assert refused.state is ModelState.REJECTED and refused.candidate_version == "3"
    assert "key" in refused.reason


async def test_a_forged_copy_of_a_version_does_not_block_the_genuine_signed_one(
    mosquitto_url: str, tmp_path: Path
):
    from edgefabric.commands.models import signed_update_frame
    from schemas.signing import generate_signing_key, write_key_pair

    write_key_pair(generate_signing_key(), tmp_path / "cloud.key", tmp_path / "cloud.pub")
    settings = ModelUpdateSettings(trusted_keys=[tmp_path / "cloud.pub"])
    model = CLOUD.read_bytes()
    forged = update_frame("digits-edge", "2", model)  # the genuine bytes, no signature
    async with (
        MqttClient(mosquitto_url, client_id="edge") as bus,
        OffloadService(OFFLOAD, bus=bus, nc=None) as offload,
        ModelUpdater(settings, bus=bus, slots=offload.slots(), state_dir=tmp_path) as updater,
    ):
        await bus.publish(topics.model_update("digits-edge"), forged)
        await wait_for(lambda: updater.rejected == 1, what="the forged v2 refused")
        await bus.publish(topics.model_update("digits-edge"), forged)  # a redelivery
        await wait_for(lambda: updater.ignored == 1, what="the same forged bytes ignored")
        signed = signed_update_frame("digits-edge", "2", model, tmp_path / "cloud.key")
        await bus.publish(topics.model_update("digits-edge"), signed, retain=True)
        await wait_for(lambda: offload.slot("digits").version == "2", what="the genuine v2")
        (status,) = await read_status(bus, "digits-edge")
    assert updater.rejected == 1 and updater.applied == 1
    assert status.state is ModelState.ACTIVE and status.active_version == "2"


async def test_versions_refused_in_the_older_refused_file_stay_refused(
    amqtt_url: str, tmp_path: Path
):
    (tmp_path / "refused.json").write_text('{"digits-edge": ["2"]}')
    async with edge(amqtt_url, tmp_path) as (bus, offload, updater, _):
        frame = update_frame("digits-edge", "2", CLOUD.read_bytes())
        await bus.publish(topics.model_update("digits-edge"), frame)
        await wait_for(lambda: updater.ignored == 1, what="the old file's v2 ignored")
        frame = update_frame("digits-edge", "3", CLOUD.read_bytes())
        await bus.publish(topics.model_update("digits-edge"), frame)
        await wait_for(lambda: offload.slot("digits").version == "3", what="v3 taken")
    assert updater.applied == 1 and updater.rejected == 0


async def test_a_rollback_asking_for_an_answer_on_a_control_topic_is_dead_lettered_not_run(
    mosquitto_url: str, tmp_path: Path
):
    control = topics.model_update("digits-edge")
    letters: list[DeadLetter] = []
    async with (
        edge(mosquitto_url, tmp_path) as (bus, offload, updater, _),
        bus.subscribe(topics.dead_letter("models")) as dead,
    ):
        await bus.publish(control, update_frame("digits-edge", "2", CLOUD.read_bytes()))
        await wait_for(lambda: offload.slot("digits").version == "2", what="the swap")
        async with bus.subscribe(control) as on_control:
            command = ModelCommand(name="digits-edge", reply_to=control, correlation_id="c-1")
            await bus.publish(topics.model_command("digits-edge"), encode(command))
            async with asyncio.timeout(10):
                async for message in dead:
                    letters.append(decode(DeadLetter, message.payload))
                    break
            assert offload.slot("digits").version == "2"  # not rolled back
            answer = await rollback(bus, "digits-edge")  # the CLI's reply topic is allowed
            assert on_control.get_nowait() is None
    assert letters[0].topic == topics.model_command("digits-edge")
    assert "not a replies topic" in letters[0].reason
    assert answer.state is ModelState.ROLLED_BACK and answer.active_version == "1"
    assert updater.rejected == 0
