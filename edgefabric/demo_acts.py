"""The demo's scripted acts: each shows one capability and measures what it promises."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

import numpy as np

from bus.mqtt import MqttClient
from cloud_bridge.downlink import MODEL, CloudPublisher
from edgefabric.cloud import Cloud
from edgefabric.demo_view import DemoCounts
from pipelines.digits import forward, load_digits_split, to_onnx, train
from pipelines.offload_client import OffloadClient
from schemas.models import ModelStatus
from schemas.signing import load_private_key, sign_model_update
from twin.client import TwinClient

PLC = "plc-1"


async def twin_write_act(bus: MqttClient, counts: DemoCounts, out: TextIO) -> None:
    """Set a desired value on the PLC's twin and follow it to the register and back."""
    target = 23.5
    async with TwinClient(bus, name="demo") as twin:
        started = time.perf_counter()
        await twin.set(PLC, {"setpoint": target})
        counts.event(f"twin: desired {PLC}.setpoint = {target} set by an app", out)
        async with asyncio.timeout(10):
            while True:
                document = await twin.get(PLC)
                prop = document.properties.get("setpoint")
                if (
                    prop is not None
                    and prop.reported is not None
                    and "setpoint" not in document.delta()
                ):
                    break
                await asyncio.sleep(0.05)
        elapsed_ms = (time.perf_counter() - started) * 1000
    counts.acts["twin_write"] = {
        "desired": target,
        "reported": prop.reported.value,
        "round_trip_ms": round(elapsed_ms, 1),
    }
    counts.event(
        f"twin: PLC register written, read back {prop.reported.value}, delta cleared "
        f"in {elapsed_ms:.0f} ms",
        out,
    )


async def outage_act(cloud: Cloud, counts: DemoCounts, out: TextIO, *, seconds: float) -> None:
    """Cut the uplink by killing the cloud hub, then bring it back: nothing is lost."""
    assert cloud.hub is not None
    before = counts.received_in_cloud
    await cloud.hub.kill()
    counts.event(
        f"outage: cloud hub killed (kill -9); the edge keeps working for {seconds:.0f} s", out
    )
    await asyncio.sleep(seconds)
    produced_during = counts.results
    await cloud.hub.start()
    restarted = time.perf_counter()
    counts.event("outage: hub restarted; the bridge drains what the edge queued", out)
    async with asyncio.timeout(60):
        while counts.received_in_cloud < produced_during:  # noqa: ASYNC110 - another task counts
            await asyncio.sleep(0.05)
    drained_s = time.perf_counter() - restarted
    missing = len(counts.results_ids_edge - counts.results_ids_cloud)
    counts.acts["outage"] = {
        "seconds": seconds,
        "results_during_outage": produced_during - before,
        "caught_up_after_s": round(drained_s, 2),
        "duplicates": counts.cloud_duplicates,
    }
    counts.event(
        f"outage: cloud caught up {drained_s:.1f} s after the link returned; "
        f"{missing} results missing, {counts.cloud_duplicates} duplicates",
        out,
    )


async def joint_inference_act(
    bus: MqttClient, counts: DemoCounts, out: TextIO, *, samples: int = 150
) -> None:
    """A phone offloads test digits; the edge answers, hard ones also ask the cloud model."""
    split = load_digits_split(seed=0)
    correct = cloud = 0
    latencies: list[float] = []
    async with OffloadClient(bus, name="demo-phone") as phone:
        for i in range(samples):
            image = (split.x_test[i] * 16).astype(np.uint8).reshape(8, 8)
            response = await phone.infer("digits", image)
            latencies.append(response.latency_ms)
            correct += response.label == int(split.y_test[i])
            if response.answer is not None and response.answer.cloud_result is not None:
                cloud += 1
            if i == 0:
                counts.event(
                    f"offload: a phone sent an 8x8 digit; the edge answered "
                    f"'{response.label}, {response.confidence:.4f}' in "
                    f"{response.latency_ms:.1f} ms",
                    out,
                )
    latencies.sort()
    counts.acts["joint_inference"] = {
        "samples": samples,
        "accuracy": round(correct / samples, 4),
        "sent_to_cloud": round(cloud / samples, 4),
        "latency_p50_ms": round(latencies[len(latencies) // 2], 2),
        "latency_p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
    }
    counts.event(
        f"joint inference: {samples} digits, accuracy {correct / samples:.1%}, "
        f"{cloud / samples:.0%} asked the cloud model, "
        f"p99 {counts.acts['joint_inference']['latency_p99_ms']} ms",
        out,
    )


async def federated_act(
    cloud: Cloud, bus: MqttClient, counts: DemoCounts, out: TextIO, *, edge_id: str
) -> None:
    """Three federated rounds: this edge (through its bridge) and three simulated sites.

    Each site trains on its own label-skewed share of the digits, which never leaves it; only
    weights travel, as binary frames, and the cloud aggregates them with FedAvg. The cloud
    signs every global with a key made for the demo; every site trusts only that key.
    """
    from aggregator.edge_trainer import EdgeTrainer  # noqa: PLC0415 - the cloud side only
    from aggregator.hub_job import hub_job  # noqa: PLC0415
    from aggregator.job import JobConfig  # noqa: PLC0415
    from aggregator.trainer import accuracy, dirichlet_split, init_weights  # noqa: PLC0415
    from aggregator.transport import MqttEdgeLink, NatsEdgeLink  # noqa: PLC0415
    from schemas.signing import TrustedKeys, generate_signing_key  # noqa: PLC0415

    split = load_digits_split()
    signing_key = generate_signing_key()
    trusted = TrustedKeys.of([signing_key.public_key()])
    sites = [edge_id, "site-b", "site-c", "site-d"]
    parts = dirichlet_split(split.y_train, len(sites), alpha=0.5, seed=0)
    config = JobConfig(job="demo-fl", edges=sites, rounds=3, round_timeout_s=10)
    hub_url = cloud.config.hub.url
    counts.event(
        f"federated: 3 rounds of FedAvg over {', '.join(sites)}; data stays put; "
        "globals signed (Ed25519), verified at every site",
        out,
    )
    async with contextlib.AsyncExitStack() as stack:
        trainers = []
        for i, (site, idx) in enumerate(zip(sites, parts, strict=True)):
            link: MqttEdgeLink | NatsEdgeLink
            if site == edge_id:
                link = MqttEdgeLink(bus, job=config.job)
            else:
                link = await stack.enter_async_context(
                    NatsEdgeLink(hub_url, edge=site, job=config.job)
                )
            trainers.append(
                EdgeTrainer(
                    edge=site,
                    link=link,
                    x=split.x_train[idx],
                    y=split.y_train[idx],
                    seed=i,
                    trusted=trusted,
                )
            )
        coordinator = await stack.enter_async_context(
            hub_job(
                hub_url,
                config,
                trainers,
                initial=init_weights(0, 0),
                evaluate=lambda w: accuracy(w, split.x_test, split.y_test),
                signing_key=signing_key,
            )
        )
        records = await coordinator.run()
    rounds = [
        {
            "round": r.round,
            "status": r.status,
            "answered": len(r.answered),
            "accuracy": None if r.accuracy is None else round(r.accuracy, 4),
        }
        for r in records
    ]
    counts.acts["federated"] = {"sites": len(sites), "rounds": rounds}
    for r in rounds:
        counts.event(
            f"federated: round {r['round']} {r['status']}, {r['answered']}/{len(sites)} sites, "
            f"global accuracy {r['accuracy']}",
            out,
        )


async def model_update_act(
    cloud: Cloud,
    bus: MqttClient,
    counts: DemoCounts,
    out: TextIO,
    *,
    edge_id: str,
    signing_key: Path,
) -> None:
    """The cloud retrains the edge model, signs it and sends it down the bridge.

    A forged, unsigned update goes first and is refused (the edge trusts only the cloud's
    key); the signed one is verified, validated and hot-swapped while the edge serves; then an
    operator rolls it back with one message.
    """
    from edgefabric.commands.models import read_status, rollback, update_frame  # noqa: PLC0415

    split = load_digits_split()
    weights = train(split.x_train, split.y_train, epochs=100, lr=0.2, seed=1)
    model = to_onnx(weights, name="digits-edge", version="2")
    accuracy = float((forward(weights, split.x_test).argmax(1) == split.y_test).mean())
    digest = hashlib.sha256(model).hexdigest()
    signature = sign_model_update(
        name="digits-edge", version="2", sha256=digest, private_key=load_private_key(signing_key)
    )
    async with CloudPublisher(cloud.config.hub.url) as downlink:
        await downlink.publish(
            edge_id, MODEL, "digits-edge", payload=update_frame("digits-edge", "9", model)
        )
        refused = await _wait_status(bus, read_status, lambda s: s.candidate_version == "9")
        counts.event(f"model update: a forged unsigned v9 was refused: {refused.reason}", out)
        await downlink.publish(
            edge_id,
            MODEL,
            "digits-edge",
            payload=update_frame("digits-edge", "2", model, signature),
        )
    counts.event(
        f"model update: the cloud sent digits-edge v2 ({accuracy:.1%} held out), signed, "
        "down the bridge",
        out,
    )
    await _wait_status(bus, read_status, lambda s: s.active_version == "2")
    counts.event(
        "model update: the edge verified the signature, validated and hot-swapped to v2 "
        "while answering requests",
        out,
    )
    status = await rollback(bus, "digits-edge")
    counts.acts["model_update"] = {
        "refused_unsigned": refused.state.value,
        "swapped_to": "2",
        "rolled_back_to": status.active_version,
        "new_accuracy": round(accuracy, 4),
    }
    counts.event(
        f"model update: rolled back with one command, active v{status.active_version}", out
    )


async def _wait_status(
    bus: MqttClient,
    read_status: Callable[..., Awaitable[list[ModelStatus]]],
    done: Callable[[ModelStatus], bool],
) -> ModelStatus:
    """The edge's retained status of digits-edge once `done` holds (15 s at most)."""
    async with asyncio.timeout(15):
        while True:
            statuses = await read_status(bus, "digits-edge", wait=0.5)
            if statuses and done(statuses[0]):
                return statuses[0]
