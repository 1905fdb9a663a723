"""The store: SQLite and PostgreSQL, migrations, pairs and judgements, exports."""
