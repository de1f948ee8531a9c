from runtime.migrations import run_migrations
from services.inventory.models import Base

run_migrations(Base.metadata)
