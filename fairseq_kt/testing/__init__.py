"""Builders for tests, the demo and the benchmarks: synthetic espeak-ng speech, tiny wav2vec2 checkpoints and tiny
language models built from configs (random or briefly trained weights), and the per-frame CIF reference loop."""
