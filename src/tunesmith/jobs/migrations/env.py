"""alembic's environment for the jobs store: migrations run on the connection ``db.open_store`` hands over."""

from __future__ import annotations

from alembic import context

from tunesmith.jobs.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
