"""Generators for the task sets shipped in ``tasks/`` (run them, never edit their output by hand)."""
