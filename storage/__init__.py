"""Persistence (SQLAlchemy store, migrations, exports). Lands with the store issue."""
