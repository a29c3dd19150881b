"""Device models and instances: native YAML and KubeEdge v1beta1 YAML, and their errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bus.mqtt import MqttClient
from mappers.device import AccessMode, DeviceInstance, PropertyType, load_devices
from mappers.errors import DeviceConfigError
from mappers.modbus.visitor import ModbusDataType, RegisterType
from mappers.runner import DeviceMapper
from mappers.service import make_driver

EXAMPLES = Path(__file__).parents[2] / "examples" / "devices"


def test_native_example_loads_with_model_merged_into_instance() -> None:
    (plc,) = load_devices(EXAMPLES / "plc.yaml")
    setpoint = plc.property("setpoint")
    assert setpoint is not None
    assert setpoint.modbus is not None
    assert setpoint.access_mode is AccessMode.READ_WRITE
    assert (setpoint.minimum, setpoint.maximum, setpoint.unit) == (0, 300, "degC")
    assert setpoint.modbus.offset == 10
    assert setpoint.modbus.scale == 0.1
    running = plc.property("running")
    assert running is not None
    assert running.modbus is not None
    assert running.modbus.register_type is RegisterType.COIL
    assert plc.report_to_cloud
    assert plc.collect_cycle_ms == 1000


def test_kubeedge_v1beta1_multi_document_example_loads_unchanged() -> None:
    (plc,) = load_devices(EXAMPLES / "kubeedge-plc.yaml")
    assert plc.name == "plc-2"
    assert plc.model == "plc-model"
    assert plc.modbus is not None
    assert (plc.modbus.port, plc.modbus.slave_id) == (5020, 1)
    energy = plc.property("energy")
    assert energy is not None
    assert energy.modbus is not None
    assert energy.type is PropertyType.INT
    assert energy.modbus.effective_type is ModbusDataType.INT32
    assert energy.modbus.is_register_swap
    assert plc.cycles_of(energy) == (5000, 5000)
    setpoint = plc.property("setpoint")
    assert setpoint is not None
    assert setpoint.desired == "21.5"
    assert setpoint.maximum == 300
    temperature = plc.property("temperature")
    assert temperature is not None
    assert temperature.report_to_cloud is True


KUBEEDGE_OPCUA_AND_BLE = """
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: m}
spec:
  properties:
    - {name: speed, type: DOUBLE, accessMode: ReadWrite}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: mill}
spec:
  deviceModelRef: {name: m}
  protocol:
    protocolName: opcua
    configData: {url: "opc.tcp://127.0.0.1:4840", userName: u, password: p}
  properties:
    - name: speed
      visitors:
        protocolName: opcua
        configData: {nodeID: "ns=2;s=Spindle.Speed", dataType: double}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: thermo}
spec:
  protocol:
    protocolName: bluetooth
    configData: {macAddress: "AA:BB:CC:DD:EE:FF"}
  properties:
    - name: temp
      visitors:
        protocolName: bluetooth
        configData:
          characteristicUUID: f000aa01-0451-4000-b000-000000000000
          dataConverter:
            startIndex: 1
            endIndex: 2
            shiftRight: 2
            orderOfOperations:
              - {operationType: Multiply, operationValue: 0.03125}
"""


def test_kubeedge_opcua_and_bluetooth_devices_load(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(KUBEEDGE_OPCUA_AND_BLE)
    mill, thermo = load_devices(path)
    assert mill.opcua is not None
    assert mill.opcua.username == "u"
    speed = mill.property("speed")
    assert speed is not None
    assert speed.opcua is not None
    assert speed.opcua.node_id == "ns=2;s=Spindle.Speed"
    assert speed.writable
    temp = thermo.property("temp")
    assert temp is not None
    assert temp.bluetooth is not None
    converter = temp.bluetooth.data_converter
    assert (converter.start_index, converter.end_index, converter.shift_right) == (1, 2, 2)
    assert converter.order_of_operations[0].operation_value == 0.03125


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (
            "devices:\n  - name: d\n    modbus: {port: 70000}\n    properties: []\n",
            "devices.0.modbus.port",
        ),
        (
            "devices:\n  - name: d\n    modbus: {}\n    properties:\n"
            "      - {name: p, modbus: {register: Holding, offset: 1}}\n",
            "devices.0.properties.0.modbus.register",
        ),
        ("devices:\n  - name: a/b\n    modbus: {}\n    properties: []\n", "devices.0.name"),
        ("devices:\n  - name: d\n    model: nope\n    modbus: {}\n", "devices.0.model"),
        ("wrong: 1\n", "wrong"),
        (KUBEEDGE_OPCUA_AND_BLE.replace("ns=2;s=Spindle.Speed", ""), "configData"),
        (
            KUBEEDGE_OPCUA_AND_BLE.replace(
                "deviceModelRef: {name: m}", "deviceModelRef: {name: x}"
            ),
            "spec.deviceModelRef.name",
        ),
        (
            KUBEEDGE_OPCUA_AND_BLE.replace(
                "protocolName: bluetooth\n    configData", "protocolName: zigbee\n    configData"
            ),
            "spec.protocol.protocolName",
        ),
        (
            KUBEEDGE_OPCUA_AND_BLE.replace("operationValue: 0.03125", "operationValue: x"),
            "spec.properties.0.visitors.configData.dataConverter",
        ),
    ],
)
def test_bad_config_names_the_file_and_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DeviceConfigError) as caught:
        load_devices(path)
    assert str(path) in str(caught.value)
    assert field in str(caught.value)


def test_a_cycle_longer_than_a_day_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    device = DeviceInstance.model_validate(
        {
            "name": "d",
            "modbus": {},
            "properties": [{"name": "p", "collectCycle": 10_000_000_000, "modbus": {"offset": 0}}],
        }
    )
    with caplog.at_level(logging.WARNING):
        DeviceMapper(
            device, make_driver(device), bus=MqttClient("mqtt://127.0.0.1:1", client_id="x")
        )
    assert "longer than a day" in caplog.text
