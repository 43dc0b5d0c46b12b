"""Queries inside alert text (Prometheus' template `query`): what an alert whose identity must stay
stable (its labels) says about the state it fires in."""

from __future__ import annotations

# The verdict of the alert's service on its instance now, and how long it has held.
VERDICT_NOW = (
    "{{ range printf `autoglm_diagnosis_verdict{instance=%q,service=%q} == 1` $labels.instance"
    " $labels.service | query }}{{ .Labels.layer }}/{{ .Labels.reason }}{{ end }}"
)
VERDICT_HELD = (
    "{{ range printf `time() - autoglm_diagnosis_verdict_since_timestamp_seconds{instance=%q,service=%q}`"
    " $labels.instance $labels.service | query }}{{ .Value | humanizeDuration }}{{ end }}"
)


def query_list(selector: str, label: str) -> str:
    """A comma-less list of the `label` values of the series a printf'd selector returns, sorted."""
    return (
        f'{{{{ range {selector} | query | sortByLabel "{label}" }}}}{{{{ .Labels.{label} }}}} {{{{ end }}}}'
    )
