"""Views of records: safe HTML (``html``) and plotly figures (``plots``). No gradio here.

The stylesheet every view's classes (``as-...``) need, in the studio and in self-contained reports,
is package data beside this module (``studio.css``), read with :func:`stylesheet`.
"""

from __future__ import annotations

from importlib import resources


def stylesheet() -> str:
    """The studio's stylesheet (``studio/viz/studio.css``), read as package data: the same in a source
    checkout, an editable install and a wheel. A missing file is a broken install: it raises."""
    return resources.files(__name__).joinpath("studio.css").read_text(encoding="utf-8")
