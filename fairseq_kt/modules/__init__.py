"""Pure-torch building blocks (no fairseq import): CIF, attention, CL head, losses."""
