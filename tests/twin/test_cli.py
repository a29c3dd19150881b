"""`edgefabric twin get|set|watch` against a running twin."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edgefabric.cli import main
from edgefabric.commands.twin import parse_assignments
from tests.twin.helpers import running_twin


def test_assignments_are_json_when_they_parse_and_text_otherwise() -> None:
    assert parse_assignments(["a=42", "b=true", 'c={"x": [1]}', "d=eco night", "e="]) == {
        "a": 42,
        "b": True,
        "c": {"x": [1]},
        "d": "eco night",
        "e": "",
    }
    with pytest.raises(ValueError, match="PROP=VALUE"):
        parse_assignments(["novalue"])


async def test_cli_sets_gets_and_watches_a_twin(
    amqtt_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--broker", amqtt_url, "--protocol", "3.1.1", "--timeout", "10"]
    async with running_twin(amqtt_url, tmp_path / "twin.db"):
        watcher = asyncio.create_task(
            asyncio.to_thread(
                main, ["twin", "watch", "lamp", "--count", "2", "--client-id", "w", *common]
            )
        )
        set_code = await asyncio.to_thread(
            main, ["twin", "set", "lamp", "level=3", "mode=eco night", *common]
        )
        assert set_code == 0
        assert await asyncio.to_thread(main, ["twin", "get", "lamp", *common]) == 0
        assert await asyncio.wait_for(watcher, timeout=20) == 0
        stale = ["twin", "set", "lamp", "level=4", "--expected-version", "0", *common]
        assert await asyncio.to_thread(main, stale) == 1
    out = capsys.readouterr().out
    assert '"ok": true' in out
    assert '"conflict"' in out
    assert '"kind": "twin_document"' in out
    assert '"value": "eco night"' in out
    assert "ef/twin/lamp/document" in out
