"""Backends: transformers in process, served models, lanes, token records, attention, the ReAct policy."""
