"""`edgefabric models status|rollback|push` on an edge's broker, and `models history` (cloud).

* ``status``: the retained `ModelStatus` of one model (or all), as the edge reported it;
* ``rollback``: one `ModelCommand`; prints the edge's answer (the version now active);
* ``push``: publish an ONNX file as a `ModelUpdate` (retained), as the cloud would; for
  trying a model on one edge without the cloud.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from pathlib import Path

from bus.mqtt import MqttClient
from schemas import topics
from schemas.base import new_message_id
from schemas.codec import decode, encode
from schemas.errors import EdgefabricError
from schemas.frames import pack
from schemas.models import ModelCommand, ModelState, ModelStatus, ModelUpdate


class ModelCommandFailed(EdgefabricError):
    """The edge did not answer, or refused the command."""


async def rollback(bus: MqttClient, model: str, *, timeout: float = 10.0) -> ModelStatus:
    """Ask the edge to roll `model` back to its previous version; the edge's answer.

    Raises:
        ModelCommandFailed: no answer within `timeout`.
    """
    correlation_id = new_message_id()
    reply_to = topics.infer_reply(f"models-{correlation_id[:12]}")
    command = ModelCommand(name=model, reply_to=reply_to, correlation_id=correlation_id)
    async with bus.subscribe(reply_to, maxsize=4) as replies:
        await bus.publish(
            topics.model_command(model),
            encode(command),
            response_topic=reply_to,
            correlation_data=correlation_id.encode(),
        )
        try:
            async with asyncio.timeout(timeout):
                async for message in replies:
                    status = decode(ModelStatus, message.payload)
                    if status.correlation_id == correlation_id:
                        return status
        except TimeoutError:
            pass
    raise ModelCommandFailed(f"no answer from the edge about {model!r} within {timeout} s")


async def read_status(
    bus: MqttClient, model: str | None, *, wait: float = 1.0
) -> list[ModelStatus]:
    """The retained statuses of `model` (or every model) the edge published."""
    topic = topics.model_status(model) if model else topics.model_status_filter()
    found: dict[str, ModelStatus] = {}
    async with bus.subscribe(topic, maxsize=1000) as sub:
        try:
            async with asyncio.timeout(wait):
                async for message in sub:
                    status = decode(ModelStatus, message.payload)
                    found[status.name] = status
                    if model:
                        break
        except TimeoutError:
            pass
    return [found[name] for name in sorted(found)]


def update_frame(name: str, version: str, model: bytes, signature: str | None = None) -> bytes:
    """A `ModelUpdate` frame carrying `model`."""
    header = ModelUpdate(
        name=name,
        version=version,
        sha256=hashlib.sha256(model).hexdigest(),
        size=len(model),
        signature=signature,
    )
    return pack(header, model)


def _line(status: ModelStatus) -> str:
    previous = status.previous_version or "-"
    text = f"{status.name}: active {status.active_version} (previous {previous}) {status.state}"
    if status.candidate_version and status.state is ModelState.REJECTED:
        text += f"; refused {status.candidate_version}"
    return text + (f": {status.reason}" if status.reason else "")


def _run_status(args: argparse.Namespace) -> int:
    async def run() -> list[ModelStatus]:
        async with MqttClient(args.broker, client_id=f"models-{new_message_id()[:8]}") as bus:
            return await read_status(bus, args.model, wait=args.timeout)

    statuses = asyncio.run(run())
    for status in statuses:
        print(_line(status))
    if not statuses:
        print("no model status on this broker")
    return 0 if statuses else 1


def _run_rollback(args: argparse.Namespace) -> int:
    async def run() -> ModelStatus:
        async with MqttClient(args.broker, client_id=f"models-{new_message_id()[:8]}") as bus:
            return await rollback(bus, args.model, timeout=args.timeout)

    status = asyncio.run(run())
    print(_line(status))
    return 0 if status.state is ModelState.ROLLED_BACK else 1


def signed_update_frame(name: str, version: str, model: bytes, key_path: Path) -> bytes:
    """A `ModelUpdate` frame signed with the Ed25519 private key in `key_path`."""
    from schemas.signing import load_private_key, sha256_hex, sign_model_update

    signature = sign_model_update(
        name=name, version=version, sha256=sha256_hex(model), private_key=load_private_key(key_path)
    )
    return update_frame(name, version, model, signature)


def _run_push(args: argparse.Namespace) -> int:
    model = Path(args.file).read_bytes()
    if args.signing_key:
        frame = signed_update_frame(args.model, args.version, model, Path(args.signing_key))
    else:
        frame = update_frame(args.model, args.version, model)

    async def run() -> None:
        async with MqttClient(args.broker, client_id=f"models-{new_message_id()[:8]}") as bus:
            await bus.publish(topics.model_update(args.model), frame, retain=True)

    asyncio.run(run())
    print(f"{args.model} v{args.version}: {len(frame)} bytes published (retained)")
    return 0


def add_edge_actions(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``status``, ``rollback`` and ``push`` under ``models``."""
    status = actions.add_parser("status", help="the active version of each model on an edge")
    status.add_argument("model", nargs="?", help="one model (default: all)")
    rollback_ = actions.add_parser("rollback", help="go back to a model's previous version")
    rollback_.add_argument("model")
    push = actions.add_parser("push", help="publish an ONNX file as a model update")
    push.add_argument("model")
    push.add_argument("--version", required=True)
    push.add_argument("--file", required=True, help="the .onnx file")
    push.add_argument("--signing-key", help="Ed25519 private key (PEM) to sign the update with")
    for parser, handler in ((status, _run_status), (rollback_, _run_rollback), (push, _run_push)):
        parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="edge broker URL")
        parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait")
        parser.set_defaults(handler=handler)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``models`` with the edge actions and the cloud's ``history``."""
    from edgefabric.commands.label import DEFAULT_DATA_DIR
    from edgefabric.commands.learning import print_history

    models = sub.add_parser("models", help="models on an edge, and the cloud's history")
    actions = models.add_subparsers(dest="models_command", required=True)
    add_edge_actions(actions)
    history = actions.add_parser("history", help="retraining rounds, metrics and decisions")
    history.add_argument("--model", help="only this model")
    history.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="cloud data dir")
    history.set_defaults(handler=print_history)
