"""Helpers the tests share: a live studio and Chromium, a throwaway PostgreSQL, a raw Gradio client, store fixtures, tiny models."""
