"""The one state machine for experiments and trials: states, and the transitions allowed between them."""

from __future__ import annotations

from enum import StrEnum

from search_spaces.errors import Conflict

__all__ = ["State", "TERMINAL", "check_transition"]


class State(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PRUNED = "pruned"
    CANCELLED = "cancelled"


TERMINAL = frozenset({State.COMPLETED, State.FAILED, State.PRUNED, State.CANCELLED})

_ALLOWED: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.RUNNING, State.FAILED, State.PRUNED, State.CANCELLED, State.COMPLETED}),
    State.RUNNING: frozenset({State.RUNNING, State.COMPLETED, State.FAILED, State.PRUNED, State.CANCELLED}),
}


def check_transition(kind: str, ident: str, current: str, new: str) -> None:
    """Raise :class:`Conflict` unless ``current → new`` is allowed (staying in a terminal state is a no-op)."""
    current_state, new_state = State(current), State(new)
    if current_state == new_state and current_state in TERMINAL:
        return
    if new_state not in _ALLOWED.get(current_state, frozenset()):
        raise Conflict(f"{kind} {ident} is {current_state}; it cannot become {new_state}")
