"""Data: the DRR benchmark generator, real-dataset adapters, and readers of the canonical dataset format."""
