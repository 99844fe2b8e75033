"""Alembic migrations, applied at start by :func:`fluxserve.store.db.migrate`."""
