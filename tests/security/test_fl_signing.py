"""Federated global models signed by the cloud, verified at the edge trainer.

Promise: an edge trainer with trusted keys trains only on a global frame a trusted key signed
exactly as received — job, round, every header field and every weights byte — and refuses an
unsigned, differently keyed, tampered or re-targeted (another round or job) one with a reason
on its dead-letter topic, sending nothing. A global's signature and a model update's are
domain-separated: neither ever verifies as the other. Model updates' wire format is unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregator.coordinator import Coordinator
from aggregator.edge_trainer import EdgeTrainer
from aggregator.errors import JobFailed
from aggregator.job import JobConfig
from aggregator.trainer import init_weights
from aggregator.transport import TRAINER_SERVICE, MqttEdgeLink, NatsCloudTransport, NatsEdgeLink
from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from cloud_bridge.bridge import CloudBridge
from cloud_bridge.downlink import FL_GLOBAL, CloudPublisher
from cloud_bridge.settings import BridgeSettings
from schemas import topics
from schemas.errors import SchemaError
from schemas.federated import (
    FL_GLOBAL_DOMAIN,
    FitInstruction,
    GlobalModelRefused,
    TrainSettings,
    decode_fit,
    decode_update,
    encode_fit,
    pack_weights,
)
from schemas.frames import pack, unpack
from schemas.signing import (
    MODEL_UPDATE_DOMAIN,
    BadModelSignature,
    Refusal,
    SignatureRefused,
    TrustedKeys,
    sign_model_update,
    sign_record,
    signed_bytes,
    signed_record,
    verify_model_update,
    verify_record,
)
from tests.aggregator.rig import EDGES, digits, edges, run_job
from tests.conftest import NatsLink
from tests.security.fuzz import Observer, observing, until_listening
from tests.support import wait_for

CLOUD = Ed25519PrivateKey.generate()
ATTACKER = Ed25519PrivateKey.generate()
TRUSTED = TrustedKeys.of([CLOUD.public_key()])
WEIGHTS = init_weights(0, 0)
JOB = "signed-fl"


def _fit(**fields: object) -> FitInstruction:
    base: dict[str, object] = {"job": JOB, "round": 3, "model": "digits", "participants": EDGES}
    return FitInstruction.model_validate({**base, **fields})


def _signed(instruction: FitInstruction | None = None, key: Ed25519PrivateKey = CLOUD) -> bytes:
    return encode_fit(instruction or _fit(), WEIGHTS, signing_key=key)


def _refusal(frame: bytes) -> GlobalModelRefused:
    with pytest.raises(GlobalModelRefused) as caught:
        decode_fit(frame, trusted=TRUSTED)
    assert caught.value.reason
    return caught.value


def _resealed(frame: bytes, **changes: object) -> bytes:
    """The signed frame with header fields changed and the original signature kept."""
    header, body = unpack(FitInstruction, frame)
    return pack(header.model_copy(update=changes), body)


# ---- sign / verify ---------------------------------------------------------------------------


def test_a_global_signed_by_a_trusted_key_decodes_to_its_weights() -> None:
    instruction, weights = decode_fit(_signed(), trusted=TRUSTED)
    assert (instruction.job, instruction.round, instruction.participants) == (JOB, 3, EDGES)
    assert instruction.signature and instruction.weights_sha256
    for got, sent in zip(weights, WEIGHTS, strict=True):
        np.testing.assert_array_equal(got, sent)


def test_without_trusted_keys_unsigned_globals_decode_as_before() -> None:
    instruction, _ = decode_fit(encode_fit(_fit(), WEIGHTS))
    assert instruction.signature is None and instruction.weights_sha256 == ""


def test_an_unsigned_global_is_refused() -> None:
    refused = _refusal(encode_fit(_fit(), WEIGHTS))
    assert refused.refusal is Refusal.UNSIGNED
    assert (refused.job, refused.round) == (JOB, 3)
    assert "unsigned global model refused" in refused.reason


def test_a_global_signed_by_another_key_is_refused() -> None:
    assert _refusal(_signed(key=ATTACKER)).refusal is Refusal.UNTRUSTED_KEY


def test_a_changed_weights_byte_is_refused_as_a_digest_mismatch() -> None:
    frame = _signed()
    tampered = frame[:-1] + bytes([frame[-1] ^ 0x01])
    refused = _refusal(tampered)
    assert refused.refusal is Refusal.DIGEST_MISMATCH
    assert "hash to" in refused.reason


def test_no_changed_byte_of_a_signed_global_changes_what_is_trained_on() -> None:
    # The signature covers the decoded header, so a byte change is refused unless it is
    # another spelling of the same value (a float's 17th digit): then nothing changed.
    frame = _signed()
    signed, _ = decode_fit(frame, trusted=TRUSTED)
    refused = 0
    for i in range(len(frame)):
        tampered = frame[:i] + bytes([frame[i] ^ 0x01]) + frame[i + 1 :]
        try:
            instruction, weights = decode_fit(tampered, trusted=TRUSTED)
        except (SchemaError, GlobalModelRefused):
            refused += 1
            continue
        assert instruction == signed, i
        assert all(np.array_equal(a, b) for a, b in zip(weights, WEIGHTS, strict=True)), i
    assert refused >= len(frame) - 2


@pytest.mark.parametrize(
    "changes",
    [
        {"job": "other-job"},
        {"round": 4},
        {"round": 2},
        {"model": "digits-mlp-32"},
        {"train": TrainSettings(lr=30.0)},
        {"participants": ["edge-1"]},
        {"participants": [*EDGES, "intruder"]},
        {"deadline": 1e12},
        {"final": True},
        {"message_id": "f" * 32},
        {"timestamp": 0.0},
        {"weights_sha256": "0" * 64},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_header_field_is_bound_by_the_signature(changes: dict[str, object]) -> None:
    assert _refusal(_resealed(_signed(), **changes)).refusal is Refusal.BAD_SIGNATURE


def test_a_global_of_another_schema_version_is_refused_before_its_signature() -> None:
    with pytest.raises(SchemaError, match="schema_version 2 is not spoken here"):
        decode_fit(_resealed(_signed(), schema_version=2), trusted=TRUSTED)


def test_a_signed_body_under_a_re_signed_attacker_header_is_refused() -> None:
    forged = _resealed(_signed(key=ATTACKER), round=3)
    assert _refusal(forged).refusal is Refusal.UNTRUSTED_KEY


@pytest.mark.parametrize("signature", ["", "ed25519", "ed25519:x:y", "rsa:abc:def"])
def test_malformed_signature_strings_are_refused(signature: str) -> None:
    with pytest.raises(GlobalModelRefused):
        decode_fit(_resealed(_signed(), signature=signature), trusted=TRUSTED)


def test_a_signature_spelled_with_stray_base64_bits_is_refused() -> None:
    # 64 bytes are 86 base64 characters and "=="; the 86th carries 4 unused bits.
    header, body = unpack(FitInstruction, _signed())
    assert header.signature is not None
    scheme, kid, encoded = header.signature.split(":")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(encoded[-3]) ^ 0x01]
    respelled = f"{scheme}:{kid}:{encoded[:-3]}{last}=="
    refused = _refusal(pack(header.model_copy(update={"signature": respelled}), body))
    assert refused.refusal is Refusal.BAD_SIGNATURE and "canonical" in refused.reason


def test_the_two_domains_never_sign_the_same_bytes() -> None:
    fields = [JOB, "3", "ab" * 32]
    model, fl = signed_record(MODEL_UPDATE_DOMAIN, fields), signed_record(FL_GLOBAL_DOMAIN, fields)
    assert model != fl
    assert not model.startswith(FL_GLOBAL_DOMAIN.encode())
    assert not fl.startswith(MODEL_UPDATE_DOMAIN.encode())
    with pytest.raises(SignatureRefused) as caught:
        verify_record(
            FL_GLOBAL_DOMAIN,
            fields,
            sign_record(MODEL_UPDATE_DOMAIN, fields, CLOUD),
            TRUSTED,
            what="x",
        )
    assert caught.value.refusal is Refusal.BAD_SIGNATURE


def test_a_model_update_signature_never_verifies_as_a_global() -> None:
    header, body = unpack(FitInstruction, _signed())
    for name, version in ((JOB, "3"), (header.model, "3"), (JOB, header.message_id)):
        signature = sign_model_update(
            name=name, version=version, sha256=header.weights_sha256, private_key=CLOUD
        )
        assert _refusal(pack(header.model_copy(update={"signature": signature}), body)).refusal is (
            Refusal.BAD_SIGNATURE
        )


def test_a_global_signature_never_verifies_as_a_model_update() -> None:
    header, _ = unpack(FitInstruction, _signed())
    with pytest.raises(BadModelSignature):
        verify_model_update(
            name=JOB,
            version="3",
            sha256=header.weights_sha256,
            signature=header.signature,
            trusted=TRUSTED,
        )


def test_model_update_signatures_keep_their_wire_format() -> None:
    # Made by the code before signing.py was generalised: old signatures must still verify.
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    digest = "ab" * 32
    assert signed_bytes("anomaly", "3", digest.upper()) == (
        b'edgefabric/model-update/v1\x00["anomaly","3","' + digest.encode() + b'"]'
    )
    golden = (
        "ed25519:56475aa75463474c:uK9fsBbjKmPsWnoRZuWw2gR8gjiDtzn8ReCDDiMEWOc6M0jtVV/awjkWHChD"
        "qkxeL6H9IowAV6OUK/mp/F0aAw=="
    )
    assert sign_model_update(name="anomaly", version="3", sha256=digest, private_key=key) == golden
    verify_model_update(
        name="anomaly",
        version="3",
        sha256=digest,
        signature=golden,
        trusted=TrustedKeys.of([key.public_key()]),
    )


# ---- over the real hub -----------------------------------------------------------------------


async def test_a_signed_job_completes_on_edges_that_trust_the_cloud_key(
    nats_link: NatsLink,
) -> None:
    config = JobConfig(job="signed", edges=EDGES, rounds=2, round_timeout_s=20)
    records, trainers, coordinator = await run_job(
        nats_link.hub.url, config, signing_key=CLOUD, trusted=TRUSTED
    )
    assert [(r.status, r.reason) for r in records] == [("completed", "all answered")] * 2
    assert all(t.rounds_answered == 2 and t.refused == 0 for t in trainers)
    await wait_for(lambda: all(t.final_weights is not None for t in trainers), 10, what="final")
    final = trainers[0].final_weights
    assert final is not None
    np.testing.assert_array_equal(final[0], coordinator.weights[0])


@pytest.mark.parametrize("key", [None, ATTACKER], ids=["unsigned", "attacker-key"])
async def test_edges_with_trusted_keys_train_on_nothing_else(
    nats_link: NatsLink, key: Ed25519PrivateKey | None
) -> None:
    url = nats_link.hub.url
    config = JobConfig(job="forged", edges=EDGES, rounds=1, round_timeout_s=1, max_failed_rounds=1)
    async with (
        edges(url, config.job, trusted=TRUSTED) as trainers,
        NatsCloudTransport(url, config.job) as transport,
        Coordinator(config, transport, initial=WEIGHTS, signing_key=key) as coordinator,
    ):
        with pytest.raises(JobFailed):
            await coordinator.run()
        await wait_for(lambda: all(t.refused for t in trainers), 10, what="every edge refused")
    expected = "unsigned global model" if key is None else "untrusted key"
    for trainer in trainers:
        assert trainer.rounds_answered == 0 and trainer.final_weights is None
        link = trainer._link  # noqa: SLF001 - the simulated edge's dead letters
        assert isinstance(link, NatsEdgeLink)
        assert all(expected in reason for reason in link.refusals), list(link.refusals)


@dataclasses.dataclass
class _Rig:
    publisher: CloudPublisher
    observer: Observer
    trainer: EdgeTrainer


def _letters_at_least(observer: Observer, count: int) -> bool:
    return len(observer.letters(TRAINER_SERVICE)) >= count


@contextlib.asynccontextmanager
async def _bridged_edge(nats_link: NatsLink, mosquitto_url: str) -> AsyncIterator[_Rig]:
    """edge-1 behind the real bridge, trusting CLOUD; an observer of its broker's ``ef/#``."""
    split = digits()
    settings = BridgeSettings(edge_id=nats_link.edge_id, leaf_url=nats_link.leaf.url)
    bridge_bus = MqttClient(
        mosquitto_url, client_id="edge-1-bridge", clean_session=False, manual_ack=True
    )
    async with (
        observing(mosquitto_url) as (probe_bus, observer),
        CloudBridge(settings, bus=bridge_bus),
        CloudPublisher(nats_link.hub.url) as publisher,
        MqttClient(mosquitto_url, client_id="fl-trainer") as bus,
        ServiceTasks("test.fl-trainer") as tasks,
    ):
        trainer = EdgeTrainer(
            edge=nats_link.edge_id,
            link=MqttEdgeLink(bus, job=JOB),
            x=split.x_train[:80],
            y=split.y_train[:80],
            trusted=TRUSTED,
        )
        tasks.spawn(trainer.run(), "trainer")
        await until_listening(probe_bus, observer, TRAINER_SERVICE, topics.fl_global(JOB))
        yield _Rig(publisher, observer, trainer)


async def test_forged_globals_on_the_downlink_are_dead_lettered_and_answered_by_nothing(
    nats_link: NatsLink, mosquitto_url: str
) -> None:
    edge = nats_link.edge_id
    genuine = _signed(_fit(round=5, participants=[edge]))
    header, body = unpack(FitInstruction, genuine)
    forged: list[tuple[bytes, str]] = [
        (encode_fit(_fit(round=6, participants=[edge]), WEIGHTS), "unsigned"),
        (_signed(_fit(round=6, participants=[edge]), key=ATTACKER), "untrusted key"),
        (genuine[:-1] + bytes([genuine[-1] ^ 0x80]), "hash to"),
        (_resealed(genuine, round=7), "does not match"),
        (_resealed(genuine, train=TrainSettings(lr=1e6)), "does not match"),
        (_signed(_fit(job="other-job", round=6, participants=[edge])), "other-job"),
    ]
    async with _bridged_edge(nats_link, mosquitto_url) as rig:
        start = len(rig.observer.letters(TRAINER_SERVICE))
        for n, (frame, _) in enumerate(forged, start=1):
            await rig.publisher.publish(None, FL_GLOBAL, JOB, payload=frame)
            await wait_for(
                functools.partial(_letters_at_least, rig.observer, start + n),
                20,
                what=f"a dead letter for forged global {n}",
            )
        letters = rig.observer.letters(TRAINER_SERVICE)[start:]
        assert rig.trainer.rounds_answered == 0
        assert not rig.observer.seen.get(topics.fl_update(JOB))

        await rig.publisher.publish(None, FL_GLOBAL, JOB, payload=genuine)
        update = topics.fl_update(JOB)
        await wait_for(lambda: rig.observer.seen.get(update), 20, what="the update for round 5")
    for letter, (frame, words) in zip(letters, forged, strict=True):
        assert letter.topic == topics.fl_global(JOB)
        assert letter.payload_size == len(frame)
        assert words in letter.reason, (words, letter.reason)
    answer, _ = decode_update(rig.observer.seen[update][0])
    assert (answer.job, answer.round, answer.edge) == (JOB, 5, edge)
    assert answer.instruction == header.message_id
    assert pack_weights(WEIGHTS) == body
