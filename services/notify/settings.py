from pydantic import Field
from pydantic_settings import SettingsConfigDict

from runtime.settings import ProcessSettings


class Settings(ProcessSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="ignore")

    database_url: str = "sqlite:///var/notify.db"
    smtp_host: str = Field("127.0.0.1", validation_alias="SMTP_HOST")
    smtp_port: int = Field(1025, validation_alias="SMTP_PORT")
    smtp_timeout_s: float = 10.0
    mail_from: str = "Order Saga <orders@saga.localhost>"
    # an SMTP outage is retried forever (an order is never un-confirmed): backoff from this, up
    # to a minute between attempts
    retry_backoff_s: float = 1.0
