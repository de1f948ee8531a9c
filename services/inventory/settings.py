from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INVENTORY_", extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    database_url: str = "sqlite:///var/inventory.db"
    retry_backoff_s: float = 0.5


@cache
def get_settings() -> Settings:
    return Settings()
