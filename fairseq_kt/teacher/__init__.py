"""The frozen teacher LM: :mod:`.model` (loading, hidden states), :mod:`.cache` (reading precomputed states) and
:mod:`.cache_build` (writing them, ``fairseq-kt-cache-teacher``)."""
