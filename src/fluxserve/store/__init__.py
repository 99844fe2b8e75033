"""Persistence: SQLAlchemy (async) tables, queries, the claim/lease queue and Alembic migrations."""
