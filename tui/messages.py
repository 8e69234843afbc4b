"""Messages from the poller (tui/poller.py) to the app: what the gateway said, or that it went away.

Past-tense nouns; the frequent ones can replace an older one still queued, so a
slow screen never works through a backlog of stale snapshots.
"""

from __future__ import annotations

from textual.message import Message

from tui.model import Snapshot


class SnapshotReceived(Message):
    def __init__(self, snapshot: Snapshot):
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotReceived)


class EventsReceived(Message):
    def __init__(self, events: list[dict]):
        super().__init__()
        self.events = events


class GatewayConnected(Message):
    def __init__(self, path: str):
        super().__init__()
        self.path = path


class GatewayDisconnected(Message):
    def __init__(self, path: str, reason: str):
        super().__init__()
        self.path = path
        self.reason = reason

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, GatewayDisconnected)
