"""Settings of the twin service, composed into the edge config as its ``twin:`` section.

Only the entry point reads them from a file; the service takes the values as keyword arguments.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

KUBEEDGE_FIELD = "twin.kubeedge"
"""The config field that turns the KubeEdge adapter on (named in errors about it)."""


class TwinSettings(BaseModel):
    """What the edge's twin runs with.

    Attributes:
        enabled: run the twin service at all.
        kubeedge: also serve KubeEdge's ``$hw/events/device/...`` topics. Needs a broker that
            accepts client publishes to topics starting with ``$`` (Mosquitto); the embedded
            amqtt refuses them, so the edge config refuses this combination.
        write_timeout_s: seconds a mapper has to answer a device write before the twin records
            the write as failed with code ``timeout``.
        db_file: the SQLite file's name inside the edge's data dir.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    kubeedge: bool = False
    write_timeout_s: float = Field(default=5.0, gt=0, le=600)
    db_file: str = "twin.db"

    @field_validator("db_file")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        # A name, not a path: the twin's state lives in the data dir with the rest of the edge.
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError("must be a file name inside data_dir, without directories")
        return value
