"""Synthetic data: pyramidal test slides and multi-cancer survival cohorts with a known risk."""
