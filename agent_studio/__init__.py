"""The installed name of Agent Studio: ``python -m agent_studio`` runs the command line.

The code lives in the design's flat layout (``app.py``, ``studio/``, ``components/``,
``storage/``); this package only gives it a name to run and a version to ask for.
"""

from studio import __version__

__all__ = ["__version__"]
