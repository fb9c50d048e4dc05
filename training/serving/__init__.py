"""Batch inference with the champion (and the challenger in shadow)."""
