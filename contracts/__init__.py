"""The wire, and nothing else: task and queue names (`names`) and one pydantic model per message
(`messages`). Every process depends on it; it depends on pydantic alone (checked by
import-linter: no celery, kombu, redis, sqlalchemy or alembic)."""
