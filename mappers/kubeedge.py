"""KubeEdge v1beta1 `DeviceModel` and `Device` YAML, read unchanged.

Fields read (everything else in a Kubernetes object — status, nodeName, pushMethod, dbMethod,
labels — is ignored, so files exported from a cluster load as they are):

- DeviceModel ``spec.properties[]``: name, type (INT/FLOAT/DOUBLE/BOOLEAN/STRING/BYTES),
  accessMode, minimum, maximum, unit, description.
- Device ``spec.deviceModelRef.name``; ``spec.protocol.protocolName/configData``;
  ``spec.properties[]``: name, collectCycle, reportCycle, reportToCloud, desired.value,
  visitors.protocolName/configData.

Cycles are milliseconds, as KubeEdge's mapper framework reads them; KubeEdge's docs show
nanosecond-looking values (kubeedge/kubeedge#6350), so the runner warns about any cycle over a
day instead of guessing the unit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mappers.ble.visitor import BleConnection, BleVisitor
from mappers.device import DeviceInstance, PropertySpec, Protocol
from mappers.errors import DeviceConfigError
from mappers.modbus.visitor import ModbusConnection, ModbusVisitor
from mappers.opcua.visitor import OpcUaConnection, OpcUaVisitor

log = logging.getLogger(__name__)

_PROTOCOLS = {
    "modbus": Protocol.MODBUS,
    "modbus-tcp": Protocol.MODBUS,
    "modbus-rtu": Protocol.MODBUS,
    "opcua": Protocol.OPCUA,
    "bluetooth": Protocol.BLUETOOTH,
    "ble": Protocol.BLUETOOTH,
}
_CONNECTIONS: dict[Protocol, type[BaseModel]] = {
    Protocol.MODBUS: ModbusConnection,
    Protocol.OPCUA: OpcUaConnection,
    Protocol.BLUETOOTH: BleConnection,
}
_VISITORS: dict[Protocol, type[BaseModel]] = {
    Protocol.MODBUS: ModbusVisitor,
    Protocol.OPCUA: OpcUaVisitor,
    Protocol.BLUETOOTH: BleVisitor,
}
_PARITY = {"none": "N", "even": "E", "odd": "O", "n": "N", "e": "E", "o": "O"}


class _Doc:
    """One YAML document with a path prefix for error messages."""

    def __init__(self, path: Path, index: int, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.kind = str(raw.get("kind", ""))
        meta = raw.get("metadata") or {}
        self.name = str(meta.get("name", "")) if isinstance(meta, dict) else ""
        self.where = f"{path}: document {index} ({self.kind} {self.name or '?'})"

    def fail(self, field: str, problem: str) -> DeviceConfigError:
        return DeviceConfigError(f"{self.where}: {field}: {problem}")

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.raw
        for part in dotted.split("."):
            if not isinstance(node, dict):
                return default
            node = node.get(part)
            if node is None:
                return default
        return node


def read_kubeedge(path: Path, documents: list[Any]) -> list[DeviceInstance]:
    """Turn KubeEdge `DeviceModel` and `Device` documents into device instances.

    Raises:
        DeviceConfigError: with the file, document number, kind, name and field.

    """
    models: dict[str, _Doc] = {}
    devices: list[_Doc] = []
    for index, raw in enumerate(documents):
        if not isinstance(raw, dict):
            raise DeviceConfigError(f"{path}: document {index}: expected a mapping")
        doc = _Doc(path, index, raw)
        if not str(raw.get("apiVersion", "")).startswith("devices.kubeedge.io/"):
            raise doc.fail(
                "apiVersion", f"expected devices.kubeedge.io/v1beta1, got {raw.get('apiVersion')!r}"
            )
        if not doc.name:
            raise doc.fail("metadata.name", "missing")
        if doc.kind == "DeviceModel":
            models[doc.name] = doc
        elif doc.kind == "Device":
            devices.append(doc)
        else:
            raise doc.fail("kind", "expected DeviceModel or Device")
    if not devices:
        raise DeviceConfigError(f"{path}: no Device document")
    return [_device(doc, models) for doc in devices]


def _device(doc: _Doc, models: dict[str, _Doc]) -> DeviceInstance:
    model_name = doc.get("spec.deviceModelRef.name")
    model = models.get(str(model_name)) if model_name is not None else None
    if model_name is not None and model is None:
        raise doc.fail("spec.deviceModelRef.name", f"no DeviceModel {model_name!r} in this file")
    model_props = {
        str(p.get("name")): p
        for p in (model.get("spec.properties", []) if model else [])
        if isinstance(p, dict)
    }
    protocol_name = str(doc.get("spec.protocol.protocolName", "")).lower()
    protocol = _PROTOCOLS.get(protocol_name)
    if protocol is None:
        raise doc.fail("spec.protocol.protocolName", f"unsupported protocol {protocol_name!r}")
    connection = _validated(
        doc, "spec.protocol.configData", _CONNECTIONS[protocol], _connection_data(doc, protocol)
    )
    props = [
        _property(doc, i, raw, protocol, model_props)
        for i, raw in enumerate(doc.get("spec.properties", []))
    ]
    try:
        return DeviceInstance.model_validate(
            {
                "name": doc.name,
                "model": model_name,
                "protocol": protocol,
                protocol.value: connection,
                "properties": props,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise doc.fail("spec", f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from exc


def _connection_data(doc: _Doc, protocol: Protocol) -> dict[str, Any]:
    data = dict(doc.get("spec.protocol.configData") or {})
    if protocol is Protocol.MODBUS:
        if "parity" in data:
            data["parity"] = _PARITY.get(str(data["parity"]).lower(), data["parity"])
        if "serialPort" in data:
            data.setdefault("communicateMode", "RTU")
        data.pop("deviceID", None)
        data.pop("protocolID", None)
    return data


def _property(
    doc: _Doc, index: int, raw: Any, protocol: Protocol, model_props: dict[str, Any]
) -> PropertySpec:
    where = f"spec.properties.{index}"
    if not isinstance(raw, dict) or "name" not in raw:
        raise doc.fail(where, "expected a mapping with 'name'")
    name = str(raw["name"])
    if model_props and name not in model_props:
        raise doc.fail(f"{where}.name", f"{name!r} is not a property of the DeviceModel")
    visitors = raw.get("visitors") or {}
    visitor_protocol = str(visitors.get("protocolName", protocol.value)).lower()
    if _PROTOCOLS.get(visitor_protocol) is not protocol:
        raise doc.fail(
            f"{where}.visitors.protocolName", f"{visitor_protocol!r} != {protocol.value!r}"
        )
    visitor = _validated(
        doc, f"{where}.visitors.configData", _VISITORS[protocol], visitors.get("configData") or {}
    )
    spec = model_props.get(name, {})
    fields: dict[str, Any] = {
        "name": name,
        "type": _type(spec.get("type")),
        "accessMode": spec.get("accessMode") or "ReadOnly",
        "min": _number(doc, f"{where} (model) minimum", spec.get("minimum")),
        "max": _number(doc, f"{where} (model) maximum", spec.get("maximum")),
        "unit": spec.get("unit") or None,
        "description": spec.get("description") or "",
        "collectCycle": raw.get("collectCycle") or None,
        "reportCycle": raw.get("reportCycle") or None,
        "reportToCloud": raw.get("reportToCloud"),
        "desired": (raw.get("desired") or {}).get("value"),
        protocol.value: visitor,
    }
    try:
        return PropertySpec.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise doc.fail(where, f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from exc


def _validated(doc: _Doc, where: str, model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    known = {f.alias or n for n, f in model.model_fields.items()} | set(model.model_fields)
    ignored = sorted(set(data) - known)
    if ignored:
        log.warning("%s: %s: ignoring unknown keys %s", doc.where, where, ignored)
    try:
        return model.model_validate({k: v for k, v in data.items() if k in known})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(map(str, first["loc"]))
        raise doc.fail(f"{where}.{field}" if field else where, first["msg"]) from exc


def _type(raw: Any) -> str | None:
    return str(raw).lower() if raw else None


def _number(doc: _Doc, where: str, raw: Any) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except (TypeError, ValueError) as exc:
        raise doc.fail(where, f"{raw!r} is not a number") from exc
