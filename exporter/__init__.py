"""autoglm-exporter: one Prometheus exporter for the whole chain of an LLM inference service."""

__version__ = "0.1.0"
