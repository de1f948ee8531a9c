from runtime.migrations import run_migrations
from orchestrator.models import Base

run_migrations(Base.metadata)
