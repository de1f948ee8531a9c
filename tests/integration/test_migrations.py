"""Every service's Alembic migrations, up, down and up again, on SQLite and on PostgreSQL.

The schema each migration set builds must be exactly what the service's models describe: the
migrations are the only way a database gets its tables (no `create_all` anywhere).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.pool import NullPool

from orchestrator import models as orchestrator_models
from runtime.migrations import downgrade, migrate
from services.inventory import models as inventory_models
from services.notify import models as notify_models
from services.payment import models as payment_models
from tests.support.paths import ROOT

MIGRATION_SETS = {
    "orchestrator": (orchestrator_models.MIGRATIONS, orchestrator_models.Base.metadata),
    "payment": (payment_models.MIGRATIONS, payment_models.Base.metadata),
    "inventory": (inventory_models.MIGRATIONS, inventory_models.Base.metadata),
    "notify": (notify_models.MIGRATIONS, notify_models.Base.metadata),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/migrations.db"
    return request.getfixturevalue("make_pg_database")()


def tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def head_revision(url: str) -> str | None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def schema_drift(url: str, metadata: MetaData) -> list:
    """What autogenerate would still write: empty when migrations and models agree."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


@pytest.mark.parametrize("service", list(MIGRATION_SETS))
def test_migrations_go_up_down_and_up_again(empty_db: str, service: str) -> None:
    script_location, metadata = MIGRATION_SETS[service]
    expected = set(metadata.tables)
    assert expected, f"{service} has no models"
    assert tables(empty_db) == set()

    migrate(empty_db, script_location)
    assert tables(empty_db) == expected | {"alembic_version"}
    assert head_revision(empty_db) is not None
    assert schema_drift(empty_db, metadata) == [], \
        f"{service}: the models and the migrations disagree (run `revision -m ...`)"

    downgrade(empty_db, script_location)
    assert tables(empty_db) & expected == set(), "downgrade to base left tables behind"
    assert head_revision(empty_db) is None

    migrate(empty_db, script_location)
    assert tables(empty_db) == expected | {"alembic_version"}
    assert schema_drift(empty_db, metadata) == []


@pytest.mark.parametrize("service", list(MIGRATION_SETS))
def test_each_service_has_its_own_versions_folder(service: str) -> None:
    script_location, _ = MIGRATION_SETS[service]
    assert (script_location / "env.py").is_file()
    versions = list((script_location / "versions").glob("*.py"))
    assert versions, f"{service} has no migrations"
    others = {loc for name, (loc, _) in MIGRATION_SETS.items() if name != service}
    assert script_location not in others


def row_counts(url: str, names: set[str]) -> dict[str, int]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return {name: connection.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one()
                    for name in sorted(names)}
    finally:
        engine.dispose()


# the two whose `migrate` command also seeds demo data
SEEDED = {"orchestrator": "orchestrator", "inventory": "services.inventory"}


def test_the_migrate_command_can_run_on_every_start(tmp_path: Path) -> None:
    """`python -m X migrate` is what compose's one-shot services run on every `up`: a second run
    changes nothing, and the demo data is seeded once."""
    urls = {name: f"sqlite:///{tmp_path}/{name}.db" for name in SEEDED}

    def run_all() -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               **{f"{name.upper()}_DATABASE_URL": url for name, url in urls.items()}}
        procs = {name: subprocess.Popen([sys.executable, "-m", module, "migrate"], env=env,
                                        cwd=tmp_path, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
                 for name, module in SEEDED.items()}
        for name, proc in procs.items():
            output, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"{name} migrate failed:\n{output}"

    run_all()
    first = {name: row_counts(url, set(MIGRATION_SETS[name][1].tables))
             for name, url in urls.items()}
    assert first["inventory"]["stock"] > 0 and first["orchestrator"]["catalog"] > 0, first
    run_all()
    again = {name: row_counts(url, set(MIGRATION_SETS[name][1].tables))
             for name, url in urls.items()}
    assert again == first


def test_no_create_all_stands_in_for_migrations() -> None:
    offenders = []
    for package in ("contracts", "orchestrator", "services", "devstack"):
        for path in (ROOT / package).rglob("*.py"):
            if re.search(r"\bcreate_all\s*\(", path.read_text(encoding="utf-8")):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
