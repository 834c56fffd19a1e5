"""Programmatic grading: the outcome of an episode is decided by code, never by the coach."""
