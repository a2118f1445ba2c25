"""Registered with fairseq when the package is imported."""
