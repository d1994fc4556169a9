"""A job's step log: append-only, so a snapshot's steps are an O(1) read-only view of its first n entries, however
often every client's stream takes one (see :class:`lucid_app.app.job_board.JobView`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from lucid_app.train.events import StepEvent


class StepsView(Sequence[StepEvent]):
    """A read-only view of some entries of an append-only list of StepEvents (the first n, for a snapshot).

    O(1) to create, whatever the number of steps; because the list only grows, the entries it shows never change.
    Indexing and slicing (negative and strided too) map through a ``range`` of indices, so a slice is again an O(1)
    view, and ``view.steps[-10:]`` or ``view.steps[::stride]`` touch only the entries they return.
    """

    def __init__(self, events: list[StepEvent], indices: range) -> None:
        self._events = events
        self._indices = indices

    def __len__(self) -> int:
        return len(self._indices)

    @overload
    def __getitem__(self, index: int) -> StepEvent: ...

    @overload
    def __getitem__(self, index: slice) -> StepsView: ...

    def __getitem__(self, index: int | slice) -> StepEvent | StepsView:
        if isinstance(index, slice):
            return StepsView(self._events, self._indices[index])
        return self._events[self._indices[index]]

    def __iter__(self) -> Iterator[StepEvent]:
        return (self._events[i] for i in self._indices)

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same events (a tuple included), like a tuple would be."""
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  # equal to tuples, so not hashable like them

    def __repr__(self) -> str:
        return f"StepsView({len(self)} steps)"


class StepLog:
    """A job's StepEvents; append-only, so a snapshot (:meth:`view`) needs no copy."""

    def __init__(self) -> None:
        self._events: list[StepEvent] = []

    def append(self, event: StepEvent) -> None:
        self._events.append(event)

    def __len__(self) -> int:
        return len(self._events)

    def view(self) -> StepsView:
        """The entries so far; later appends do not show in it."""
        return StepsView(self._events, range(len(self._events)))


__all__ = ["StepLog", "StepsView"]
