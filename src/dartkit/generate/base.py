"""The one protocol every generation backend implements.

A backend turns chat conversations into assistant texts. It yields each result as
soon as it is ready (index into the batch, text) so the caller can append it to
the cache at once; the order of results is the backend's business.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from dartkit.config import DecodingConfig

Messages = list[dict[str, str]]


class BackendError(RuntimeError):
    """A backend failed in a way retries cannot fix (bad credentials, unknown model, ...)."""


@runtime_checkable
class Backend(Protocol):
    """A text generator behind a model spec string."""

    spec: str

    def identity(self) -> dict[str, Any]:
        """What makes this model's outputs what they are: model id, revision, adapter hash.

        It goes into every cache key and into the run manifest.
        """
        ...

    def generate(
        self, conversations: Sequence[Messages], decoding: DecodingConfig
    ) -> Iterator[tuple[int, str]]:
        """Yield ``(index, text)`` for every conversation, as each one finishes."""
        ...

    def close(self) -> None:
        """Release model memory, connections, threads."""
        ...
