from pydantic import Field
from pydantic_settings import SettingsConfigDict

from runtime.settings import ProcessSettings


class Settings(ProcessSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENT_", extra="ignore")

    database_url: str = "sqlite:///var/payment.db"
    # gateway timeouts are retried this many times, backing off exponentially from retry_backoff_s
    max_retries: int = 4
    retry_backoff_s: float = 0.5
    # the sandbox: real gateways answer in ~100 ms and give up on a stuck call after a timeout
    gateway_latency_ms: int = Field(0, validation_alias="GATEWAY_LATENCY_MS")
    gateway_timeout_ms: int = Field(200, validation_alias="GATEWAY_TIMEOUT_MS")
