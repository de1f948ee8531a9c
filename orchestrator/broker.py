"""The orchestrator's Celery app: the API publishes with it, the saga worker consumes with it."""
from contracts.runtime.app import make_app
from orchestrator.settings import get_settings

app = make_app("saga", get_settings().redis_url)
app.conf.include = ["orchestrator.tasks"]
