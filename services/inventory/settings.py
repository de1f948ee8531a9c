from pydantic_settings import SettingsConfigDict

from runtime.settings import ProcessSettings


class Settings(ProcessSettings):
    model_config = SettingsConfigDict(env_prefix="INVENTORY_", extra="ignore")

    database_url: str = "sqlite:///var/inventory.db"
    retry_backoff_s: float = 0.5
