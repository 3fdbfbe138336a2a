"""The error a participant's request can meet: their state does not allow it."""

from __future__ import annotations


class FlowError(Exception):
    """A request the participant's state does not allow: an HTTP status and a clear sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
