"""Alembic environment: migrations run on the connection handed in by `migrations.upgrade`."""

from alembic import context
from sqlalchemy import create_engine

from services.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # plain `alembic` CLI use: a sync engine on the same URL
    url = config.get_main_option("sqlalchemy.url").replace("+asyncpg", "+psycopg2")
    with create_engine(url).connect() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
else:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
