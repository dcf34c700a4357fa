"""Evaluation of frozen backbones: linear probes and weighted kNN (retrieval comes later)."""
