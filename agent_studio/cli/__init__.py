"""The ``agent-studio`` command line: :mod:`agent_studio.cli.main` holds the one list of commands;
each command group is one module (``serve``, ``catalog``, ``run``, ``evaluate``, ``data``, ``share``),
its flags shared through :mod:`agent_studio.cli.options`.

It lives in ``agent_studio`` (the installed name), not in ``studio/``: commands wire the store
(``storage``) and the web app (``components``), which the core never imports."""
