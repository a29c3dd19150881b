"""Cloud learning: hard-example labelling, incremental retraining, federated aggregation."""

__all__: list[str] = []
