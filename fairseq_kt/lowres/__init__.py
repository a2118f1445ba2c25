"""The low-resource evidence experiment and the demo's setting: natural English sentences (WordNet 3.0's usage
examples) spoken by espeak-ng, a small wav2vec2 pretrained on them with fairseq's own self-supervised recipe, and
fine-tuning runs of baseline CTC vs each KT method, paired by seed, with paired statistics; in the WordNet regimes
(10 minutes, 1 hour) and in the homophone regime (:mod:`.domain`: a grammar of everyday sentences whose homophones
only the context spells, where the recognizer works), with KT's strength set from its measured gradient share."""
