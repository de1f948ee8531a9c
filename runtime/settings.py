"""The settings base every process's `Settings` extends: environment variables with local
defaults. Read by a composition root (`bootstrap()`), never at import."""
from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.broker import Broker


class ProcessSettings(BaseSettings):
    """What every process needs: the broker and its own database. A subclass sets its
    `env_prefix` (`PAYMENT_` reads `PAYMENT_DATABASE_URL`) and its default database."""

    model_config = SettingsConfigDict(extra="ignore")

    # the broker (runtime.broker): BROKER_URL, else REDIS_URL, which named it before there was
    # a choice
    broker_url: str = Field("redis://127.0.0.1:6379/0",
                            validation_alias=AliasChoices("BROKER_URL", "REDIS_URL"))
    broker_sentinel_master: str | None = Field(None, validation_alias="BROKER_SENTINEL_MASTER")
    database_url: str = "sqlite:///var/process.db"
    # the longest any wait on the database may last (runtime.db.make_engine)
    database_timeout_s: float = 10.0
    # a worker whose queue holds messages while it has taken none for this long stops, to be
    # restarted (runtime/watchdog.py)
    worker_stall_s: float = Field(60.0, validation_alias="WORKER_STALL_S", gt=0)
    # a worker serves its own metrics on this port (runtime/metrics.py); unset: none
    worker_metrics_port: int | None = Field(None, validation_alias="WORKER_METRICS_PORT",
                                            gt=0, lt=65536)

    @model_validator(mode="after")
    def _known_broker(self) -> "ProcessSettings":
        self.broker.kind  # noqa: B018  (raises ValueError, named, for a broker we do not run on)
        return self

    @property
    def broker(self) -> Broker:
        return Broker(self.broker_url, self.broker_sentinel_master)
