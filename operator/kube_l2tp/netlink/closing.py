"""The with-statement protocol for the ports and event sources that hold sockets."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """``with X() as x:`` closes x on the way out; subclasses define :meth:`close`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
