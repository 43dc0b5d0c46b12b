"""Declared metrics: one MetricSpec per family, what the families and the metrics reference are built from."""
