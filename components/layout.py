"""The studio web app: composes the panels into one ``gr.Blocks``.

Until the UI issue lands this is a start page: it shows the built-in environments (a
first frame of each) and how to run episodes from the command line.
"""

from __future__ import annotations

import html

import gradio as gr

from storage import Store
from studio.envs.registry import BUILTIN, make_env

CLI_HINT = """Run episodes headless while the interactive panels are being built:

```
python app.py envs
python app.py run --env gridworld --policy expert --seed 0 --episodes 5
python app.py run --env household --policy react --model default --action-mode score
python app.py run --env gym:FrozenLake-v1 --policy random --out episodes.jsonl
python app.py run --env gridworld --policy react --candidates 3 --seed 0 --max-steps 3
python app.py pairs --from candidates
python app.py export --format dpo --out dpo.jsonl
python app.py stats
```
"""


def build_app(store: Store | None = None) -> gr.Blocks:
    """The studio app over ``store`` (where episodes and annotations are kept)."""
    with gr.Blocks(title="Agent Studio") as app:
        gr.Markdown("# Agent Studio\nWatch agents act, look inside their decisions, and turn what you see into training data.")
        with gr.Row():
            for info in BUILTIN.values():
                env = make_env(info.name)
                env.reset(seed=0)
                with gr.Column():
                    gr.HTML(f"<h3>{html.escape(info.name)}</h3><p>{html.escape(info.summary)}</p>")
                    gr.Image(env.render(), interactive=False, show_label=False)
        gr.Markdown(CLI_HINT)
        if store is not None:
            counts = store.episodes.count()
            stored = counts["episodes"]
            gr.Markdown(f"Database: `{store.url}` ({stored} episode{'' if stored == 1 else 's'} stored)")
    return app
