"""Look and feel: the theme, the stylesheet and the keyboard shortcut (Gradio 6 takes them at launch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

ASSETS = Path(__file__).resolve().parent.parent / "assets"

# Keyboard shortcuts (the buttons show them): each key presses the first *visible* button it
# names, so one key can mean different things on different tabs. Keys typed into a text field
# are left alone.
KEYBOARD = """
<script>
const AS_KEYS = {
  "s": ["as-step"],
  "1": ["as-judge-left"], "2": ["as-judge-right"], "3": ["as-judge-tie"], "4": ["as-judge-both"],
  "0": ["as-skip"], "u": ["as-undo"],
  "g": ["as-label-good"], "n": ["as-label-neutral"], "b": ["as-label-bad"],
  "j": ["as-label-next"], "k": ["as-label-prev"],
};
document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = target && (["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName) || target.isContentEditable);
  if (typing && event.key === "Escape") { target.blur(); return; }  // Esc leaves a text field
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  for (const id of AS_KEYS[event.key.toLowerCase()] || []) {
    const button = document.getElementById(id);
    if (button && button.offsetParent !== null && !button.disabled) { event.preventDefault(); button.click(); return; }
  }
});
</script>
"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="blue", secondary_hue="orange", neutral_hue="slate", radius_size="md")


#: No panel takes a file, so Gradio's upload route refuses every file with content: nothing a
#: browser sends can land on the server's disk (and be loaded as a model, say).
MAX_UPLOAD_BYTES = 0


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``Blocks.launch``: theme, CSS, the keyboard shortcut, the upload limit."""
    return {"theme": theme(), "css_paths": [ASSETS / "studio.css"], "head": KEYBOARD, "max_file_size": MAX_UPLOAD_BYTES}
