"""The low-resource evidence experiment and the demo's setting: natural English sentences (WordNet 3.0's usage
examples) spoken by espeak-ng, a small wav2vec2 pretrained on them with fairseq's own self-supervised recipe, and
fine-tuning runs of baseline CTC vs each KT method, paired by seed, with paired statistics."""
