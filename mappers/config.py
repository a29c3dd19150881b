"""Reading device files: native edgefabric YAML and KubeEdge v1beta1 YAML.

Native format::

    models:                       # optional: shared device models
      - name: plc-model
        properties:
          - {name: setpoint, type: double, accessMode: ReadWrite, min: 0, max: 100, unit: degC}
    devices:
      - name: plc-1
        model: plc-model          # optional; properties then add only their visitors
        protocol: modbus
        modbus: {host: 127.0.0.1, port: 502, slave_id: 1}
        collect_cycle_ms: 1000
        properties:
          - {name: setpoint, modbus: {register: HoldingRegister, offset: 10, scale: 0.1}}

A file whose first document has ``apiVersion: devices.kubeedge.io/...`` is read as KubeEdge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mappers.device import DeviceInstance
from mappers.errors import DeviceConfigError


class DeviceModelFile(BaseModel):
    """A native device model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    properties: list[dict[str, Any]] = Field(min_length=1)


def _where(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    return f"{where}: {first['msg']}"


def load_device_file(path: Path) -> list[DeviceInstance]:
    """Read one device file (native or KubeEdge).

    Raises:
        DeviceConfigError: unreadable, not YAML, or an invalid field; the message names the
            file and the field path.

    """
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise DeviceConfigError(f"{path}: {exc}") from exc
    if not documents:
        raise DeviceConfigError(f"{path}: empty device file")
    first = documents[0]
    if isinstance(first, dict) and str(first.get("apiVersion", "")).startswith(
        "devices.kubeedge.io/"
    ):
        from mappers.kubeedge import read_kubeedge  # noqa: PLC0415 - only when needed

        return read_kubeedge(path, documents)
    if len(documents) != 1 or not isinstance(first, dict):
        raise DeviceConfigError(f"{path}: expected one mapping with 'devices' (and 'models')")
    return _read_native(path, first)


def _read_native(path: Path, raw: dict[str, Any]) -> list[DeviceInstance]:
    unknown = set(raw) - {"models", "devices"}
    if unknown:
        raise DeviceConfigError(f"{path}: {sorted(unknown)[0]}: unknown key")
    models: dict[str, DeviceModelFile] = {}
    for i, item in enumerate(raw.get("models") or []):
        try:
            model = DeviceModelFile.model_validate(item)
        except ValidationError as exc:
            raise DeviceConfigError(f"{path}: models.{i}.{_where(exc)}") from exc
        models[model.name] = model
    devices: list[DeviceInstance] = []
    for i, item in enumerate(raw.get("devices") or []):
        if not isinstance(item, dict):
            raise DeviceConfigError(f"{path}: devices.{i}: expected a mapping")
        merged = _with_model(path, i, item, models)
        try:
            devices.append(DeviceInstance.model_validate(merged))
        except ValidationError as exc:
            raise DeviceConfigError(f"{path}: devices.{i}.{_where(exc)}") from exc
    if not devices:
        raise DeviceConfigError(f"{path}: devices: no device defined")
    return devices


def _with_model(
    path: Path, index: int, device: dict[str, Any], models: dict[str, DeviceModelFile]
) -> dict[str, Any]:
    """The device's properties, each merged over its model property (instance wins)."""
    model_name = device.get("model")
    if model_name is None:
        return device
    model = models.get(str(model_name))
    if model is None:
        raise DeviceConfigError(f"{path}: devices.{index}.model: no model {model_name!r}")
    own = {p.get("name"): p for p in device.get("properties") or [] if isinstance(p, dict)}
    extra = set(own) - {p.get("name") for p in model.properties}
    if extra:
        raise DeviceConfigError(
            f"{path}: devices.{index}.properties: {sorted(map(str, extra))[0]!r} "
            f"is not in model {model_name!r}"
        )
    props = [{**p, **own.get(p.get("name"), {})} for p in model.properties if p.get("name") in own]
    return {**device, "properties": props}
