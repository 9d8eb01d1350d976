"""The one way the operator's work asks to be tried again: the handlers translate it for Kopf,
the pool coalescer waits it out."""

from __future__ import annotations


class RetryLater(Exception):
    def __init__(self, message: str, delay: float):
        super().__init__(message)
        self.delay = delay
