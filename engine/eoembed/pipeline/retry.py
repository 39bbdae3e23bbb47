"""Retry policy: which errors are permanent, backoff with jitter, and error text for records."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import CapabilityError, EoembedError, PermanentProviderError, SpecError

#: Errors that no retry can fix: the request itself is wrong, or the data can never be read.
PERMANENT = (SpecError, CapabilityError, PermanentProviderError)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter: the k-th wait is
    ``backoff · 2^k · U(0.5, 1.5)`` seconds, capped at ``max_wait``."""

    retries: int = 2
    backoff: float = 0.2
    max_wait: float = 10.0

    def wait(self, attempt: int) -> float:
        return min(self.max_wait, self.backoff * (2**attempt) * random.uniform(0.5, 1.5))

    def call(self, fn: Callable[[], Any]) -> tuple[Any, int]:
        """``(fn(), attempts)``; re-raises the last error (with ``.attempts``) when all fail."""
        for attempt in range(self.retries + 1):
            try:
                return fn(), attempt + 1
            except PERMANENT as exc:
                exc.attempts = attempt + 1  # type: ignore[attr-defined]
                raise
            except Exception as exc:
                if attempt >= self.retries:
                    exc.attempts = attempt + 1  # type: ignore[attr-defined]
                    raise
                time.sleep(self.wait(attempt))
        raise AssertionError("unreachable")


def error_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, EoembedError) else f"{type(exc).__name__}: {text}"
