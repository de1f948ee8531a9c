from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    database_url: str = "sqlite:///var/orchestrator.db"
    api_host: str = Field("127.0.0.1", validation_alias="API_HOST")
    api_port: int = Field(8000, validation_alias="API_PORT")
    # the saga worker re-publishes outbox rows the API or a reply handler could not publish
    relay_interval_s: float = 2.0
    relay_grace_s: float = 5.0


@cache
def get_settings() -> Settings:
    return Settings()
