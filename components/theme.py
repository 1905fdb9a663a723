"""Look and feel: the theme, the stylesheet and the keyboard shortcut (Gradio 6 takes them at launch)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from studio.viz import stylesheet


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
  " ": ["as-present-play"], "arrowright": ["as-present-next"], "arrowleft": ["as-present-prev"],
};
document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = target && (["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName) || target.isContentEditable);
  if (typing && event.key === "Escape") { target.blur(); return; }  // Esc leaves a text field
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  if (document.querySelector("#as-live .as-live") && event.key.toLowerCase() === "s") return;  // a step is being written
  for (const id of AS_KEYS[event.key.toLowerCase()] || []) {
    const button = document.getElementById(id);
    if (button && button.offsetParent !== null && !button.disabled) { event.preventDefault(); button.click(); return; }
  }
});
// The trace follows the newest step (and the one being written) unless the user scrolled up;
// the step labels keep the step being labelled in view.
(() => {
  let stick = true, labelled = "";
  document.addEventListener("scroll", (event) => {
    const box = document.getElementById("as-trace");
    if (box && event.target === box) stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  }, true);
  const follow = () => {
    const box = document.getElementById("as-trace");
    if (box && stick) {
      const cards = box.querySelectorAll("#as-timeline .as-step");
      const chosen = box.querySelector("#as-timeline .as-step.as-selected");
      const live = box.querySelector("#as-live .as-live");
      if (chosen && !live && cards.length && chosen !== cards[cards.length - 1]) chosen.scrollIntoView({block: "nearest"});
      else box.scrollTop = box.scrollHeight;
    }
    const current = document.querySelector("#as-label-view .as-step.as-selected");
    const key = current ? (document.querySelector("#as-label-view .as-episode-head")?.textContent || "") + current.dataset.step : "";
    if (current && key !== labelled) { labelled = key; current.scrollIntoView({block: "nearest"}); }
  };
  new MutationObserver(follow).observe(document.documentElement, {childList: true, subtree: true});
  // Clicking a step card selects that step (as the slider does).
  document.addEventListener("click", (event) => {
    const card = event.target.closest ? event.target.closest("#as-timeline .as-step[data-step]") : null;
    if (!card || event.target.closest("details, summary, a, button, input")) return;
    const input = document.querySelector("#as-selected input[type=number]");
    if (!input) return;
    input.value = card.dataset.step;
    input.dispatchEvent(new Event("input", {bubbles: true}));
  });
})();
// /?view=api opens the API page. Gradio 6 reads the parameter but never loads the page it names (its
// footer button does: toggled off and on, it loads and opens it), so the button is pressed here.
(() => {
  if (new URLSearchParams(location.search).get("view") !== "api") return;
  let tries = 0;
  const open = () => {
    const button = document.querySelector("footer button.show-api");
    if (document.querySelector(".api-docs")) return;
    if (!button) { if (tries++ < 100) setTimeout(open, 200); return; }
    button.click();  // off (the page thinks it is open)...
    setTimeout(() => { if (!document.querySelector(".api-docs")) button.click(); }, 300);  // ...and on, loaded
  };
  setTimeout(open, 500);  // (Gradio adds this script to the page after it loaded)
})();
</script>
"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="blue", secondary_hue="orange", neutral_hue="slate", radius_size="md")


#: No panel takes a file, so Gradio's upload route refuses every file with content: nothing a
#: browser sends can land on the server's disk (and be loaded as a model, say).
MAX_UPLOAD_BYTES = 0


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``Blocks.launch``: theme, CSS, the keyboard shortcut, the upload limit."""
    return {"theme": theme(), "css": stylesheet(), "head": KEYBOARD, "max_file_size": MAX_UPLOAD_BYTES}
