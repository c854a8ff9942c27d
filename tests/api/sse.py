"""A small Server-Sent Events reader for the tests (the wire format, parsed by hand so
the tests see exactly what a client receives)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Event:
    id: str | None
    event: str
    data: Any


def read_events(client: httpx.Client, url: str, *, last_event_id: str | None = None,
                stop_after: int | None = None) -> list[Event]:
    """Events of ``url`` until the stream ends (or ``stop_after`` events were read)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    events: list[Event] = []
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        data: list[str] = []
        for line in response.iter_lines():
            if line == "":
                if data:
                    events.append(Event(fields.get("id"), fields.get("event", "message"),
                                        json.loads("\n".join(data))))
                    if stop_after is not None and len(events) >= stop_after:
                        break
                fields, data = {}, []
            elif line.startswith(":"):
                continue  # a ping
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value
    return events
