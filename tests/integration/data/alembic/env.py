"""Alembic environment of the test project (the generic template's online mode). pg_schema_downgrade does not run it:
it drives Alembic's EnvironmentContext on its own connection. The tests run it to migrate up, as a project would."""

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config


def run_migrations_online():
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                     poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
