"""Real multi-process tests: two CPU processes over gloo, launched with ``torchrun``."""
