"""Metrics, statistics and readable tables."""
