"""Persistence: the SQLAlchemy store, its migrations, and TRL-shaped exports.

Only records of the core (``studio.trace``) and of ``storage.records`` leave this package.
"""

from agent_studio.storage.store import Store, open_store

__all__ = ["Store", "open_store"]
