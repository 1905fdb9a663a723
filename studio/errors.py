"""User-facing errors.

Anything a user can get wrong (an unknown environment, a bad option, a bad seed, a
malformed action) raises a :class:`StudioError` whose message is one clear sentence.
The CLI prints it and exits with code 2; the UI shows it; neither shows a traceback.
"""

from __future__ import annotations


class StudioError(Exception):
    """A user error: its message is shown as-is, on one line."""


class UnknownEnvironment(StudioError):
    """The environment name is not registered and is not an installed Gymnasium id."""


class BadOption(StudioError):
    """An environment or policy option has an unknown name or an unusable value."""


class EpisodeOver(StudioError):
    """A step was requested on an episode that has already terminated or been truncated."""


class Interrupted(StudioError):
    """Stop was pressed while the policy decided: its unfinished output was dropped, nothing was stepped."""


class NotStored(StudioError):
    """A step could not be written where it had to go (the database): the episode was stopped there."""
