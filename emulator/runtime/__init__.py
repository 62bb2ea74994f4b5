"""Executing Plans: journal, state, executors, progress."""
