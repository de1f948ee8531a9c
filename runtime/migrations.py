"""Alembic, the same way for every process: upgrade a live database, autogenerate a revision, and
the body of every `migrations/env.py`."""
import tempfile
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, create_engine, pool

from runtime.db import UtcDateTime


def _config(url: str, script_location: Path) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["url"] = url
    return cfg


def migrate(url: str, script_location: Path, revision: str = "head") -> None:
    command.upgrade(_config(url, script_location), revision)


def downgrade(url: str, script_location: Path, revision: str = "base") -> None:
    command.downgrade(_config(url, script_location), revision)


def revision(script_location: Path, message: str) -> None:
    """Autogenerate a new revision by diffing the models against a scratch SQLite at head."""
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/scratch.db"
        migrate(url, script_location)
        command.revision(_config(url, script_location), message=message, autogenerate=True)


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # migrations stay plain SQLAlchemy: they must not import our code, which will change
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(metadata: MetaData) -> None:
    """The body of every service's migrations/env.py (online mode only: we migrate live DBs)."""
    url = context.config.attributes["url"]
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata,
                          render_as_batch=url.startswith("sqlite"), render_item=_render_item)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
