"""Classify Leaves (images): pipeline, synthetic leaf set, tuning objective."""
