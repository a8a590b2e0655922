"""Builders: producers of activation stores (python -m builders.<name>)."""
