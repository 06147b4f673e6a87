"""Scores: the fusion metrics and the tidy score tables of a study's predictions."""
