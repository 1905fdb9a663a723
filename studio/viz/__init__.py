"""Views of records: safe HTML (``html``) and plotly figures (``plots``). No gradio here."""
