from orchestrator.models import Base
from runtime.migrations import run_migrations

run_migrations(Base.metadata)
