"""Model updates at the edge: verify, load, validate, swap atomically, report, roll back.

An update (a `ModelUpdate` frame, retained on `topics.model_update(name)`) goes through:

1. size and SHA-256 of the body against the header, and the signature when the edge trusts
   signing keys (`schemas.signing`);
2. a new ONNX Runtime session, built in a worker thread (the loop keeps serving);
3. a validation inference on the slot's recent real inputs: the candidate must accept the
   same input, give the active version's outputs (names and shapes), and only finite values;
4. `ModelSlot.swap`: one reference assignment, so calls in flight finish on the old session
   and the next call uses the new one; nothing fails, nothing waits.

Every outcome is published retained on `topics.model_status(name)`; a refused candidate is
named with its reason and the active version stays. A `ModelCommand` (``rollback``) on
`topics.model_command(name)` swaps back to the previous version and is answered on its reply
topic, which must be one a requester may make us publish on (`topics.reply_topic_refusal`:
inside ``ef/`` only a replies topic); a command with any other reply topic is dead-lettered
and not executed.

What was refused or rolled back is remembered (in `state_dir` when given), so the retained
update does not bring it back after a reconnect or a restart: a refused update by the exact
bytes of its frame (a forged or corrupt copy of version 2 never blocks the genuine version 2),
a rolled-back version by its version and model digest. An older, genuinely signed version
is taken again if it is published (there is no downgrade protection: versions are opaque
strings, and a signature does not say which version it supersedes).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np

from bus.errors import NotConnected
from bus.lifecycle import ServiceTasks
from bus.mqtt import MqttClient
from bus.subscription import InboundMessage
from pipelines.errors import ModelLoadError
from pipelines.model_slot import LoadedModel, ModelSlot, make_session
from pipelines.settings import ModelUpdateSettings
from schemas import topics
from schemas.codec import decode, encode
from schemas.errors import EdgefabricError, SchemaError
from schemas.frames import unpack
from schemas.models import ModelCommand, ModelState, ModelStatus, ModelUpdate
from schemas.signing import TrustedKeys, verify_model_update
from schemas.status import DeadLetter

log = logging.getLogger(__name__)
SERVICE = "models"
ANY_COPY = "*"
"""Mark of a version remembered by the older refused.json (a list of versions): every copy."""


def frame_mark(payload: bytes) -> str:
    """How a refused update is remembered: the digest of its whole frame (header and body)."""
    return "frame:" + hashlib.sha256(payload).hexdigest()


def model_mark(sha256: str) -> str:
    """How a rolled-back version is remembered: the digest of its model body."""
    return "model:" + sha256 if sha256 else ANY_COPY


def validate_candidate(slot: ModelSlot, candidate: LoadedModel) -> None:
    """Run the candidate and the active version on the slot's recent inputs and compare.

    Raises:
        ModelLoadError: different input width or outputs, a failed run, or non-finite values.
    """
    active = slot.active
    width, new_width = active.input_shape[-1], candidate.input_shape[-1]
    if isinstance(width, int) and isinstance(new_width, int) and width != new_width:
        raise ModelLoadError(f"input is {new_width} wide, the active version takes {width}")
    samples = list(slot.samples)
    if samples:
        batch = np.concatenate(samples).astype(np.float32)
    else:
        batch = np.zeros((1, width if isinstance(width, int) else 1), dtype=np.float32)
    names = [o.name for o in active.session.get_outputs()]
    try:
        expected = active.session.run(names, {active.input_name: batch})
        got = candidate.session.run(names, {candidate.input_name: batch})
    except Exception as exc:  # onnxruntime's errors are untyped (missing output, bad shape)
        raise ModelLoadError(f"validation inference failed: {exc}") from exc
    for name, old, new in zip(names, expected, got, strict=True):
        old_shape, new_shape = np.shape(old), np.shape(new)
        if old_shape != new_shape:
            raise ModelLoadError(f"output {name!r} has shape {new_shape}, expected {old_shape}")
        if not np.all(np.isfinite(new)):
            raise ModelLoadError(f"output {name!r} is not finite on the validation samples")


class ModelUpdater:
    """Applies model updates and rollbacks to this edge's model slots (async CM).

    Args:
        settings: trust and size limits.
        bus: the edge's MQTT client.
        slots: model name -> the slot serving it (streaming pipelines and offload).
        state_dir: where refused versions are remembered across restarts; None = in memory.

    Attributes:
        refused_versions: model name -> version -> marks (`frame_mark`, `model_mark`,
            `ANY_COPY`) of the copies of that version this edge will not take.
    """

    def __init__(
        self,
        settings: ModelUpdateSettings,
        *,
        bus: MqttClient,
        slots: Mapping[str, ModelSlot],
        state_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self._bus = bus
        self.slots = dict(slots)
        self._trusted = TrustedKeys.from_files(settings.trusted_keys)
        self._state_file = state_dir / "refused.json" if state_dir else None
        self.refused_versions: dict[str, dict[str, set[str]]] = self._load_refused()
        self._lock = asyncio.Lock()
        self._tasks = ServiceTasks(SERVICE)
        self.applied = 0
        self.rejected = 0
        self.ignored = 0

    def _load_refused(self) -> dict[str, dict[str, set[str]]]:
        """Read refused.json; the older format (name -> [versions]) means every copy."""
        if self._state_file is None or not self._state_file.exists():
            return {}
        data = json.loads(self._state_file.read_text())
        return {
            name: {v: {ANY_COPY} for v in entry}
            if isinstance(entry, list)
            else {v: set(marks) for v, marks in entry.items()}
            for name, entry in data.items()
        }

    def _remember(self, name: str, version: str, mark: str) -> None:
        self.refused_versions.setdefault(name, {}).setdefault(version, set()).add(mark)
        if self._state_file is not None:
            self._state_file.parent.mkdir(parents=True, exist_ok=True)
            data = {
                n: {v: sorted(marks) for v, marks in versions.items()}
                for n, versions in self.refused_versions.items()
            }
            tmp = self._state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(self._state_file)

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        for task, topic_filter in (
            ("updates", topics.model_update_filter()),
            ("commands", topics.model_command_filter()),
        ):
            await self._tasks.spawn_ready(functools.partial(self._serve, topic_filter), task)
        for name, slot in self.slots.items():
            await self._status(name, slot, ModelState.ACTIVE)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.__aexit__(exc_type, exc, tb)

    async def _serve(self, topic_filter: str, ready: asyncio.Event) -> None:
        async with self._bus.subscribe(topic_filter, maxsize=16) as sub:
            ready.set()
            async for message in sub:
                name = message.topic.split("/")[2]
                if name not in self.slots:
                    continue  # another edge service's model, or none of ours
                async with self._lock:  # one change at a time per edge
                    if message.topic.endswith("/update"):
                        await self._on_update(name, message)
                    else:
                        await self._on_command(name, message)

    async def _status(
        self,
        name: str,
        slot: ModelSlot,
        state: ModelState,
        *,
        reason: str = "",
        candidate: str | None = None,
        correlation_id: str | None = None,
    ) -> ModelStatus:
        status = ModelStatus(
            name=name,
            active_version=slot.version,
            previous_version=slot.previous.version if slot.previous else None,
            state=state,
            reason=reason,
            candidate_version=candidate,
            swaps=slot.swaps,
            correlation_id=correlation_id,
        )
        await self._bus.publish(topics.model_status(name), encode(status), retain=True)
        return status

    async def _on_update(self, name: str, message: InboundMessage) -> None:
        slot = self.slots[name]
        try:
            header, body = unpack(ModelUpdate, message.payload)
        except SchemaError as exc:
            self.rejected += 1
            await self._status(name, slot, ModelState.REJECTED, reason=exc.reason)
            await self._dead_letter(message, exc.reason)
            return
        if header.version == slot.version or await self._remembered(name, header, message.payload):
            self.ignored += 1  # the retained update again (reconnect, restart), or refused
            return
        try:
            if header.name != name:
                raise ModelLoadError(f"update names model {header.name!r} on {name!r}'s topic")
            candidate = await asyncio.to_thread(self._prepare, slot, header, body)
        except EdgefabricError as exc:  # ModelLoadError, SchemaError, signing refusals
            self.rejected += 1
            mark = await asyncio.to_thread(frame_mark, message.payload)
            self._remember(name, header.version, mark)
            reason = exc.reason if isinstance(exc, SchemaError) else str(exc)
            log.warning("model %s v%s refused: %s", name, header.version, reason)
            await self._status(
                name, slot, ModelState.REJECTED, reason=reason, candidate=header.version
            )
            await self._dead_letter(message, reason)
            return
        slot.swap(candidate)
        self.applied += 1
        await self._status(name, slot, ModelState.ACTIVE, candidate=header.version)

    async def _remembered(self, name: str, header: ModelUpdate, payload: bytes) -> bool:
        """Whether this copy of `header.version` was refused or rolled back before.

        The frame is hashed (in a worker thread: up to `max_model_bytes`) only when its version
        has marks, so a redelivery of the active or an unknown version costs nothing.
        """
        marks = self.refused_versions.get(name, {}).get(header.version)
        if not marks:
            return False
        if ANY_COPY in marks or model_mark(header.sha256) in marks:
            return True
        return await asyncio.to_thread(frame_mark, payload) in marks

    async def _dead_letter(self, message: InboundMessage, reason: str) -> None:
        """Put a refused update or command on ``ef/dead-letter/models`` with its reason."""
        letter = DeadLetter.of(
            service=SERVICE, topic=message.topic, reason=reason, payload=message.payload
        )
        with contextlib.suppress(NotConnected):
            await self._bus.publish(topics.dead_letter(SERVICE), encode(letter))

    def _prepare(self, slot: ModelSlot, header: ModelUpdate, body: bytes) -> LoadedModel:
        """Verify, load and validate (in a worker thread)."""
        if len(body) != header.size or len(body) > self.settings.max_model_bytes:
            raise ModelLoadError(f"model body is {len(body)} bytes, header says {header.size}")
        digest = hashlib.sha256(body).hexdigest()
        if digest != header.sha256:
            raise ModelLoadError(
                f"sha256 mismatch: got {digest[:12]}…, header {header.sha256[:12]}…"
            )
        if self.settings.trusted_keys:
            verify_model_update(
                name=header.name,
                version=header.version,
                sha256=header.sha256,
                signature=header.signature,
                trusted=self._trusted,
            )
        threads = slot.active.session.get_session_options().intra_op_num_threads or 1
        candidate = LoadedModel(header.version, make_session(body, threads=threads), digest)
        validate_candidate(slot, candidate)
        return candidate

    async def _on_command(self, name: str, message: InboundMessage) -> None:
        slot = self.slots[name]
        try:
            command = decode(ModelCommand, message.payload)
        except SchemaError as exc:
            log.warning("model command for %s refused: %s", name, exc.reason)
            await self._dead_letter(message, exc.reason)
            return
        reply_to = message.response_topic or command.reply_to
        if reply_to and (refusal := topics.reply_topic_refusal(reply_to)) is not None:
            log.warning("model command for %s refused: %s", name, refusal)
            await self._dead_letter(message, refusal)
            return
        leaving = slot.active
        if slot.rollback():
            self._remember(name, leaving.version, model_mark(leaving.sha256))
            status = await self._status(
                name,
                slot,
                ModelState.ROLLED_BACK,
                reason=f"rolled back from {leaving.version}",
                correlation_id=command.correlation_id,
            )
        else:
            status = await self._status(
                name,
                slot,
                ModelState.REJECTED,
                reason="no previous version to roll back to",
                correlation_id=command.correlation_id,
            )
        if reply_to:
            await self._bus.publish(
                reply_to, encode(status), correlation_data=message.correlation_data
            )
