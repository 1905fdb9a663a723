"""Agent Studio's entry point on the design card: ``python app.py [command]``.

The same command line as ``agent-studio`` and ``python -m agent_studio``; the commands live in
:mod:`agent_studio.cli` (one module per group, one ``COMMANDS`` list in ``agent_studio/cli/main.py``).
With no command, or only flags, it starts the studio (``serve``). ``agent-studio --help`` lists them all.
"""

import sys

from agent_studio.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
