"""Alembic environment: runs on the connection the studio hands over (see storage/migrate.py).

From a shell, ``alembic -c storage/alembic.ini -x db=URL upgrade head`` works too.
"""

from __future__ import annotations

from alembic import context

from agent_studio.storage.orm import Base

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from agent_studio.storage.db import make_engine, resolve_url

        engine = make_engine(resolve_url(context.get_x_argument(as_dictionary=True).get("db")))
        with engine.connect() as connection:
            _migrate(connection)
            connection.commit()
        return
    _migrate(connection)


def _migrate(connection) -> None:  # noqa: ANN001 - sqlalchemy Connection
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table instead.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


run()
