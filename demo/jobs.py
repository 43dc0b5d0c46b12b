"""What travels through Redis between the api's handlers and its workers.

A handler LPUSHes a Job (JSON) on the queue list and BLPOPs the job's own result list; a worker
BRPOPs the queue (so the list is FIFO), calls the engine, RPUSHes the Outcome on the result list
and sets it to expire, so the answer to a client that gave up does not stay in Redis for ever.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass

RESULT_TTL_SECONDS = 60


@dataclass(frozen=True)
class Job:
    request_id: str
    prompt: str
    max_tokens: int
    enqueued_at: float

    @classmethod
    def new(cls, prompt: str, max_tokens: int) -> Job:
        return cls(uuid.uuid4().hex, prompt, max_tokens, time.time())

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: str | bytes) -> Job:
        """ValueError when it is not a job."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a job is a JSON object")
        try:
            return cls(
                str(data["request_id"]),
                str(data["prompt"]),
                int(data["max_tokens"]),
                float(data["enqueued_at"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a job: {exc}") from None


@dataclass(frozen=True)
class Outcome:
    status: int  # the HTTP status the handler answers with: 200, 502 (engine failed), 504 (engine timeout)
    text: str = ""
    error: str = ""

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: str | bytes) -> Outcome:
        data = json.loads(raw)
        return cls(int(data["status"]), str(data.get("text", "")), str(data.get("error", "")))


def result_key(queue: str, request_id: str) -> str:
    return f"{queue}:result:{request_id}"
