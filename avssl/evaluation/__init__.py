"""Evaluation of frozen backbones: linear probes (kNN and retrieval come later)."""
