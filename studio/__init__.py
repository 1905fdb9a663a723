"""Agent Studio core: trace records, environments, policies and the episode runner.

This package never imports gradio or sqlalchemy (the UI and the store depend on it, not
the other way round), and torch/transformers are imported only where models are loaded.
"""

__version__ = "0.1.0"
