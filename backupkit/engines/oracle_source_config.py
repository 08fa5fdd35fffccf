"""The typed policy ``source`` of engine oracle: the endpoint (``dsn``, ``user``, password source) and
the ``oracle`` block (``oracle_config.OracleSource``: mode, schema, DIRECTORY, client, ssh, rman).
Imports nothing from python-oracledb."""

from __future__ import annotations

from typing import ClassVar

from pydantic import model_validator

from .oracle_config import OracleSource, check_endpoint
from .source_config import EndpointSource


class OracleEngineSource(EndpointSource):
    """``source`` for ``engine: oracle``: a container of the connect endpoint and the ``oracle`` block."""

    engine: ClassVar[str] = "oracle"
    foreign_hints: ClassVar[dict[str, str]] = {
        "mode": "write it as source.oracle.mode: datapump or rman",
        "host": "write host, port and service in dsn as host:port/service",
        "port": "write host, port and service in dsn as host:port/service",
        "database": "write the service in dsn as host:port/service, the schema as source.oracle.schema",
    }
    required_hints: ClassVar[dict[str, str]] = {
        "oracle": "is required for engine oracle: at least 'schema' (see docs/oracle.md)"}

    oracle: OracleSource  # schema, DIRECTORY, thin/thick mode, mode rman's ssh and rman blocks (docs/oracle.md)

    @model_validator(mode="after")
    def _oracle_endpoint(self) -> "OracleEngineSource":
        check_endpoint("Source", dsn=self.dsn, client=self.oracle, password_file=self.password_file,
                       password_env=self.password_env)
        return self
