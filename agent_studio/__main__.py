"""``python -m agent_studio [command]``: the same command line as ``agent-studio`` and ``python app.py``.

``python -m`` puts the current folder first on ``sys.path``, so a folder with an ``app.py`` (or a
``studio/``) of its own would be imported instead of this project's. The folder this package was
installed into goes first instead, and the current folder is dropped.
"""

import os
import sys

INSTALLED = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
here = os.path.abspath(os.getcwd())
sys.path[:] = [INSTALLED] + [
    entry for entry in sys.path if os.path.abspath(entry or os.curdir) not in {here, INSTALLED}
]

from agent_studio.cli.main import main  # noqa: E402 - after the path is set: this project, not the folder

if __name__ == "__main__":
    sys.exit(main())
