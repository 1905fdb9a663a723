"""Environments: the built-ins, Gymnasium and its families, snapshots and forks."""
