"""fairseq dataset wrappers."""
