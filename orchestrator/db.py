from functools import cache
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from contracts.runtime.store import make_engine, reader
from orchestrator.settings import get_settings

MIGRATIONS = Path(__file__).parent / "migrations"


@cache
def engine() -> Engine:
    return make_engine(get_settings().database_url)


@cache
def sessions() -> sessionmaker:  # type: ignore[type-arg]
    return sessionmaker(engine(), expire_on_commit=False)


@cache
def read_sessions() -> sessionmaker:  # type: ignore[type-arg]
    return sessionmaker(reader(engine()), expire_on_commit=False)
