"""The monitoring mixin: alert rules, recording rules, Grafana dashboards and the Kubernetes
PrometheusRule, written as code from one set of thresholds (config.py) and generated into
alerts/, dashboards/ and deploy/kubernetes/ by `python -m mixin` (committed; a test checks drift)."""
