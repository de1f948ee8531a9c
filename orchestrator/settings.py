from pydantic import Field
from pydantic_settings import SettingsConfigDict

from runtime.settings import ProcessSettings


class Settings(ProcessSettings):
    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")

    database_url: str = "sqlite:///var/orchestrator.db"
    # a client waits no longer than this for a locked or away database before its 503
    database_timeout_s: float = 5.0
    api_host: str = Field("127.0.0.1", validation_alias="API_HOST")
    api_port: int = Field(8000, validation_alias="API_PORT")
    # the front door (orchestrator/front_door.py): comma-separated bearer keys (unset: open),
    # and the largest request body taken
    api_keys: str = Field("", validation_alias="API_KEYS")
    max_body_bytes: int = Field(65536, validation_alias="MAX_BODY_BYTES", gt=0)
    # POST /orders answers 503 while the first step's queue holds more than this
    max_queue_depth: int = Field(10000, validation_alias="MAX_QUEUE_DEPTH", gt=0)
    # the saga worker re-publishes outbox rows the API or a reply handler could not publish
    relay_interval_s: float = 2.0
    relay_grace_s: float = 5.0
    # a saga that hears nothing for step_deadline_s is driven again (its steps are idempotent);
    # one still pending after saga_deadline_s is compensated. The step deadline exceeds the
    # longest retry countdown (60 s), so a step that is retrying is never driven twice.
    step_deadline_s: float = 120.0
    saga_deadline_s: float = 900.0
