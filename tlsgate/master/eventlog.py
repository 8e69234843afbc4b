"""The master's recent-event history and its live subscribers.

Two kinds of events go in: ``tcp_connection_closed.v0`` events, which workers
send over their channels (tlsgate/master/plane.py) as flat rows
(`tlsgate.events.closed_event_row`), and ``gateway_log.v0`` events, made by
`GatewayLogHandler` from the master's own log records (worker exits and restarts,
reloads, endpoint changes). ``events.subscribe`` requests
(tlsgate/master/handlers.py) read the backlog and register a subscriber.

Rows stay rows until someone reads them: most of the time nobody does, and a gateway
busy with short connections would otherwise spend a good part of the master's time
building events for a backlog that is overwritten unread.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from tlsgate.control.schema import GATEWAY_LOG_EVENT
from tlsgate.events import CLOSED_ROW_LENGTH, closed_event_from_row, new_event_id, rfc3339

log = logging.getLogger(__name__)

BACKLOG = 1000
"""Events kept for new subscribers."""

Subscriber = Callable[[dict], None]


class EventLog:
    def __init__(self, capacity: int = BACKLOG):
        self.recent: deque[dict | list] = deque(maxlen=capacity)
        """Events, and closed-event rows not expanded yet, oldest first."""
        self.subscribers: list[Subscriber] = []

    def append(self, event: dict) -> None:
        self.recent.append(event)
        for subscriber in list(self.subscribers):
            subscriber(event)

    def append_row(self, row: list) -> None:
        """A worker's `closed_event_row`; expanded now only if someone follows events."""
        if (
            not isinstance(row, list)
            or len(row) != CLOSED_ROW_LENGTH
            or type(row[1]) is not int  # the row's times: whole microseconds
            or type(row[2]) is not int
            or not isinstance(row[-1], dict)
        ):
            log.error("worker sent a malformed event row; dropped")
            return
        if self.subscribers:
            self.append(closed_event_from_row(row))
        else:
            self.recent.append(row)

    def backlog(self, count: int) -> list[dict]:
        if count <= 0:
            return []
        items = list(self.recent)[-count:]
        return [closed_event_from_row(i) if isinstance(i, list) else i for i in items]

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)


def gateway_event(kind: str, level: str, message: str, ts: float, **fields) -> dict:
    """A ``gateway_log.v0`` event; ``kind`` says what happened (worker_exited, reloaded, ...)."""
    return {
        "event_id": new_event_id(),
        "event_type": GATEWAY_LOG_EVENT,
        "event_timestamp": rfc3339(ts),
        "object": {"kind": kind, "level": level, "message": message, **fields},
    }


class GatewayLogHandler(logging.Handler):
    """Turns the master's log records (INFO and up) into ``gateway_log.v0`` events.

    A record may carry ``extra={"event_kind": ..., "event_fields": {...}}``;
    without them the kind is ``log``.
    """

    def __init__(self, events: EventLog):
        super().__init__(logging.INFO)
        self.events = events
        self._busy = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._busy:
            return  # a subscriber's failure logged from inside append: do not recurse
        self._busy = True
        try:
            event = gateway_event(
                getattr(record, "event_kind", "log"),
                record.levelname.lower(),
                record.getMessage(),
                record.created,
                **getattr(record, "event_fields", {}),
            )
            self.events.append(event)
        finally:
            self._busy = False
