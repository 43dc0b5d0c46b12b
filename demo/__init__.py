"""A fault-injectable stand-in for an Open-AutoGLM deployment, so the exporter can be watched at work.

Three processes, as in production: `python -m demo engine` (a vLLM look-alike), `python -m demo api`
(the HTTP API that queues jobs in Redis for its workers, which call the engine) and
`python -m demo webhook` (an Alertmanager receiver that prints what would page someone).
Each service takes faults at `/admin/fault` so that every link of the exporter's chain can be
broken on purpose and the verdict checked. Standard library plus `redis` only: it runs in a slim
container, and it never imports the exporter it is there to exercise.
"""
