"""Our own stores: SQLAlchemy 2 (async) tables, repositories, the unit of work, the outbox, and the
Redis adapter. The only package that imports sqlalchemy or redis."""
