"""Where a property lives on an OPC UA server, and how to reach the server."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

_CONFIG = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class SecurityPolicy(StrEnum):
    """Security policies edgefabric supports (asyncua names)."""

    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"


class SecurityMode(StrEnum):
    """Message security modes (OPC UA Part 4, 7.15)."""

    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class OpcUaConnection(BaseModel):
    """How to reach an OPC UA server.

    `subscribe=True` uses data-change subscriptions with `sampling_ms`; polling at the
    collect cycle is the fallback when the server refuses subscriptions.
    """

    model_config = _CONFIG

    url: str = Field(pattern=r"^opc\.tcp://")
    security_policy: SecurityPolicy = Field(default=SecurityPolicy.NONE, alias="securityPolicy")
    security_mode: SecurityMode = Field(default=SecurityMode.NONE, alias="securityMode")
    username: str | None = Field(default=None, alias="userName")
    password: str | None = None
    certificate: Path | None = None
    private_key: Path | None = Field(default=None, alias="privateKey")
    server_certificate: Path | None = Field(default=None, alias="serverCertificate")
    timeout_s: float = Field(default=4.0, gt=0)
    subscribe: bool = True
    sampling_ms: int = Field(default=100, ge=0, alias="samplingInterval")
    backoff_initial_s: float = Field(default=0.2, gt=0)
    backoff_max_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _security_is_complete(self) -> Self:
        secure = self.security_policy is not SecurityPolicy.NONE
        if secure and self.security_mode is SecurityMode.NONE:
            raise ValueError("securityPolicy Basic256Sha256 needs securityMode Sign/SignAndEncrypt")
        if not secure and self.security_mode is not SecurityMode.NONE:
            raise ValueError(f"securityMode {self.security_mode.value} needs a securityPolicy")
        if secure and (self.certificate is None or self.private_key is None):
            raise ValueError("a secure connection needs 'certificate' and 'privateKey' files")
        return self


class OpcUaVisitor(BaseModel):
    """One property's node: `node_id` (``ns=2;s=...``, ``ns=2;i=...``) or a browse path.

    A browse path is slash-separated qualified names from the Objects folder, e.g.
    ``2:Machine/2:Spindle/2:Speed`` (KubeEdge's `browseName`).
    """

    model_config = _CONFIG

    node_id: str | None = Field(default=None, alias="nodeID", min_length=1)
    browse_path: str | None = Field(default=None, alias="browseName", min_length=1)
    data_type: str | None = Field(default=None, alias="dataType")

    @model_validator(mode="after")
    def _one_address(self) -> Self:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("give exactly one of 'nodeID' and 'browseName'")
        return self
