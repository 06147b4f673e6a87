"""Rehearsing the full reproduction on a machine without the real data or a GPU (docs/full-reproduction.md):
a mock of the data portal serving the real datasets' files in their real formats and sizes."""
