"""Sweep engines: how the baseline and every layer's knockout are computed for one batch.
``naive`` runs one masked generation per condition (the reference); ``fast`` shares the prefix."""
