"""The migrations build the schema `services/tables.py` describes: a column or index added to one
and not the other is a test failure, not a surprise on an upgraded database."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.tables import metadata


async def test_the_migrated_database_is_the_tables_metadata(db):
    def differences(sync_conn):
        return compare_metadata(MigrationContext.configure(sync_conn), metadata)

    async with db.engine.connect() as conn:
        diff = await conn.run_sync(differences)

    assert diff == []
