from runtime.migrations import run_migrations
from services.payment.models import Base

run_migrations(Base.metadata)
