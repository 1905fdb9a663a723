"""Gradio panels. The only package that imports gradio."""
