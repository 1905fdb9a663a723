"""Look and feel: the theme, the stylesheet and the keyboard shortcut (Gradio 6 takes them at launch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

ASSETS = Path(__file__).resolve().parent.parent / "assets"

# S steps (unless the focus is in a text field); the button shows the shortcut.
KEYBOARD = """
<script>
document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = target && (["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName) || target.isContentEditable);
  if (typing || event.ctrlKey || event.metaKey || event.altKey || event.key.toLowerCase() !== "s") return;
  const button = document.querySelector("#as-step");
  if (button && !button.disabled) { event.preventDefault(); button.click(); }
});
</script>
"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="blue", secondary_hue="orange", neutral_hue="slate", radius_size="md")


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``Blocks.launch``: theme, CSS and the keyboard shortcut."""
    return {"theme": theme(), "css_paths": [ASSETS / "studio.css"], "head": KEYBOARD}
