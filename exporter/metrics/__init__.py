"""Declared metrics (one MetricSpec per family) and the README's generated metrics reference."""
