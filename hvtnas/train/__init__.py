"""Datasets, the proxy trainer, zero-cost proxies and checkpoints."""
