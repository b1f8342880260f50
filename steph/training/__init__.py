"""Shared training machinery: batching of padded bags, optimiser, schedule and the fit loop."""
