"""Agent Studio, installed as one distribution: ``agent_studio`` holds the command line
(:mod:`agent_studio.cli`, ``python -m agent_studio``) and the design's two outer packages,
:mod:`agent_studio.storage` (the store) and :mod:`agent_studio.components` (the web app); the core is
``studio``.

In the source tree the outer packages are the design card's top-level folders ``storage/`` and
``components/``: this package's path also reaches the project folder there (only there: a wheel
installs them inside ``agent_studio/``), so ``agent_studio.storage`` is ``storage/`` and generic
names such as ``storage`` or ``components`` are never installed as top-level modules.
"""

import os

from studio import __version__

_HERE = os.path.dirname(os.path.abspath(__file__))
_PROJECT = os.path.dirname(_HERE)
if not os.path.isdir(os.path.join(_HERE, "storage")) and os.path.isfile(
    os.path.join(_PROJECT, "storage", "__init__.py")
):
    __path__.append(_PROJECT)  # noqa: F821 - a package's __path__, set by the import system

__all__ = ["__version__"]
