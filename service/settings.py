"""Server settings, read from the environment (`WORLDSWEEP_*`) and overridable by `serve` flags.

The app receives one `Settings` object (`create_app(settings)`) and routes get it through the
`get_settings` dependency, so tests can build an app with any configuration without touching
the environment.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STORE = "./worldsweep-data"


class Settings(BaseSettings):
    """Every knob of the HTTP service. Environment: `WORLDSWEEP_<NAME>` (e.g. WORLDSWEEP_PORT)."""

    model_config = SettingsConfigDict(env_prefix="WORLDSWEEP_", extra="ignore", frozen=True,
                                      populate_by_name=True)

    # where results go; None -> $WORLDSWEEP_STORE or ./worldsweep-data (the ResultStore default)
    store: str | None = None
    # Ray cluster the experiment drivers join; RAY_ADDRESS is honoured too (Ray's own variable).
    # None -> each driver starts an embedded local Ray.
    ray_address: str | None = Field(
        default=None, validation_alias=AliasChoices("WORLDSWEEP_RAY_ADDRESS", "RAY_ADDRESS")
    )
    # when set, every /experiments request needs `Authorization: Bearer <token>`
    api_token: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # SQLite file with experiment state; None -> <store>/_server/worldsweep.db for a local store
    # (pyarrow dataset discovery skips `_`-prefixed folders), ./worldsweep-server.db otherwise
    db_path: Path | None = None
    # experiments whose drivers run at the same time (each in its own process)
    max_concurrent: int = Field(default=1, ge=1, le=64)
    # accept and queue experiments but start no workers (maintenance; queued work waits)
    paused: bool = False
    # seconds a cancelled worker gets to stop on its own before it is terminated
    cancel_grace_s: float = Field(default=10.0, ge=0)
    # limits on what one request / experiment may ask for (422 or 413 above them)
    max_body_bytes: int = Field(default=1_000_000, ge=1)
    max_seed_runs: int = Field(default=20_000, ge=1)
    max_steps: int = Field(default=200_000, ge=0)
    max_seq_len: int = Field(default=4096, ge=2)
    max_n_train: int = Field(default=200_000, ge=1)

    def resolved_store(self) -> str:
        import os

        return self.store or os.environ.get("WORLDSWEEP_STORE") or DEFAULT_STORE

    def resolved_db_path(self) -> Path:
        if self.db_path is not None:
            return Path(self.db_path)
        store = self.resolved_store()
        if "://" in store and not store.startswith("file://"):
            return Path("worldsweep-server.db").resolve()
        return (Path(store.removeprefix("file://")) / "_server" / "worldsweep.db").resolve()

    def limits(self) -> dict[str, int]:
        """The per-experiment limits, keyed as `ExperimentSpec.check_limits` expects."""
        return {"seed_runs": self.max_seed_runs, "steps": self.max_steps,
                "seq_len": self.max_seq_len, "n_train": self.max_n_train}

    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token else None


def is_loopback(host: str) -> bool:
    """True when `host` only ever means this machine (127.0.0.0/8, ::1, or a name resolving there)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)
