"""``python -m agent_studio [command]``: the same command line as ``agent-studio`` and ``python app.py``."""

import sys

from app import main

if __name__ == "__main__":
    sys.exit(main())
