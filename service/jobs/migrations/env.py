"""Alembic environment: always run programmatically with a connection from the job store."""

from alembic import context

from service.jobs.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
