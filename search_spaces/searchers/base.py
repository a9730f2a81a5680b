"""The searcher contract: propose token sequences, observe rewards, save and restore everything.

A searcher knows only a :class:`~search_spaces.tokens.TokenSpace`; it never sees Ray, the store or
the trainer. That keeps every searcher testable in milliseconds over a tabular benchmark, and lets one
thin adapter (``tune.py``) put any of them behind Ray Tune. The contract, shared by all:

- ``propose()`` returns a :class:`Proposal` or ``None`` when the searcher waits for results (the
  caller asks again after the next ``observe``). Several proposals may be outstanding at once.
- ``observe(proposal_id, reward, constraint=None, objective=None)`` takes the reward of a proposal, in
  any order. ``None`` or NaN means the trial failed; it becomes :meth:`Searcher.failure_reward` (a
  defined penalty), never an exception. ``constraint``, where the trial knows it (latency is measured
  before training), is Optuna's convention: ``<= 0`` when the architecture meets the latency target
  (``latency / target - 1``); searchers that model feasibility use it, the others ignore it.
  ``objective``, where the trial reports it, is what the reward trades against latency (the trial's
  accuracy or mIoU): a searcher with a reward model models it and the constraint apart, as
  constrained Bayesian optimisation does, since the reward mixes the two; the others ignore it.
- ``withdraw(proposal_id)`` takes back a pending proposal that will not be evaluated (a wrapper
  proposed another in its place): the searcher forgets it, it is neither a result nor a failure.
- ``state_dict()`` / ``load_state_dict()`` carry the whole state (model weights, optimiser, random
  generators, pending proposals) as bytes, so a restored searcher makes the same next proposal.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from search_spaces.errors import SpecError
from search_spaces.searchers.options import OPTIONS, SearcherOptions, check_options
from search_spaces.tokens import TokenSpace

__all__ = [
    "Proposal",
    "Searcher",
    "register_searcher",
    "create_searcher",
    "list_searchers",
    "is_failed",
]

_STATE_VERSION = 1


@dataclass(frozen=True)
class Proposal:
    """One architecture to evaluate: an id the searcher will recognise in ``observe``, and its tokens."""

    id: str
    tokens: tuple[int, ...]


def is_failed(reward: float | None) -> bool:
    """A reward that stands for a failed trial: missing or not a finite number."""
    return reward is None or not math.isfinite(float(reward))


class Searcher(ABC):
    """Base class of every searcher; subclasses implement ``_propose``, ``_observe`` and their state.

    The base class owns what all searchers share: proposal ids, the record of pending proposals, the
    failure penalty and the (de)serialisation envelope.

    ``failure_reward``: the reward a failed trial counts as. By default the lowest reward observed
    so far (0.0 before any), which penalises failure on whatever scale the rewards have.
    """

    name: str = "base"
    options_model: type[SearcherOptions] = SearcherOptions

    def __init__(self, space: TokenSpace, seed: int | None = None, *, failure_reward: float | None = None):
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._failure_reward = failure_reward
        self._min_reward: float | None = None
        self._next_id = 0
        self.pending: dict[str, tuple[int, ...]] = {}
        self.num_observed = 0

    # -- public contract -------------------------------------------------------------------------
    def propose(self) -> Proposal | None:
        """The next architecture to evaluate, or ``None`` while the searcher waits for results."""
        tokens = self._propose()
        if tokens is None:
            return None
        proposal = Proposal(id=str(self._next_id), tokens=tuple(int(t) for t in tokens))
        self._next_id += 1
        self.pending[proposal.id] = proposal.tokens
        self._after_propose(proposal)
        return proposal

    def observe(
        self, proposal_id: str, reward: float | None, constraint: float | None = None,
        objective: float | None = None,
    ) -> None:
        """Record the reward of a pending proposal; ``None``/NaN means the trial failed.

        ``constraint``: ``<= 0`` when the architecture meets the latency target, ``None`` when unknown.
        ``objective``: the accuracy the reward was computed from, ``None`` when unknown (or failed).
        """
        tokens = self._take(proposal_id)
        value = self.failure_reward() if is_failed(reward) else float(reward)  # type: ignore[arg-type]
        if not is_failed(reward):
            self._min_reward = value if self._min_reward is None else min(self._min_reward, value)
        self.num_observed += 1
        if constraint is not None and not math.isfinite(float(constraint)):
            constraint = None
        objective = None if is_failed(reward) or is_failed(objective) else float(objective)  # type: ignore[arg-type]
        self._observe(proposal_id, tokens, value, failed=is_failed(reward), constraint=constraint,
                      objective=objective)

    def withdraw(self, proposal_id: str) -> None:
        """Take back a pending proposal that will not be evaluated; the searcher forgets it."""
        self._withdraw(proposal_id, self._take(proposal_id))

    def _take(self, proposal_id: str) -> tuple[int, ...]:
        if proposal_id not in self.pending:
            raise SpecError(
                f"proposal {proposal_id!r} is not pending for this {self.name} searcher "
                f"({len(self.pending)} pending); observe each proposal once, with the id propose() gave"
            )
        return self.pending.pop(proposal_id)

    def failure_reward(self) -> float:
        """The penalty a failed trial receives (see the class docstring)."""
        if self._failure_reward is not None:
            return float(self._failure_reward)
        return 0.0 if self._min_reward is None else float(self._min_reward)

    def state_dict(self) -> bytes:
        """Everything needed to continue exactly where this searcher is, as bytes."""
        state = {
            "version": _STATE_VERSION,
            "name": self.name,
            "rng": self.rng.bit_generator.state,
            "failure_reward": self._failure_reward,
            "min_reward": self._min_reward,
            "next_id": self._next_id,
            "pending": dict(self.pending),
            "num_observed": self.num_observed,
            "own": self._get_state(),
        }
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def load_state_dict(self, data: bytes) -> None:
        """Restore what :meth:`state_dict` saved (from a searcher of the same name and space).

        The bytes are a pickle: load only state this service wrote itself.
        """
        state = pickle.loads(data)
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise SpecError("searcher state is not from this version of geonas; start the search afresh")
        if state["name"] != self.name:
            raise SpecError(
                f"searcher state was saved by {state['name']!r}, cannot load it into {self.name!r}; "
                f"create the searcher with name {state['name']!r}"
            )
        self.rng.bit_generator.state = state["rng"]
        self._failure_reward = state["failure_reward"]
        self._min_reward = state["min_reward"]
        self._next_id = state["next_id"]
        self.pending = dict(state["pending"])
        self.num_observed = state["num_observed"]
        self._set_state(state["own"])

    # -- for subclasses ---------------------------------------------------------------------------
    @abstractmethod
    def _propose(self) -> tuple[int, ...] | None:
        """Tokens of the next proposal, or ``None`` to wait."""

    @abstractmethod
    def _observe(
        self, proposal_id: str, tokens: tuple[int, ...], reward: float, failed: bool,
        constraint: float | None = None, objective: float | None = None,
    ) -> None:
        """Learn from one result; ``reward`` is already the penalty when ``failed`` (``objective`` None then)."""

    def _withdraw(self, proposal_id: str, tokens: tuple[int, ...]) -> None:
        """Hook: forget what was kept for a proposal that will not be evaluated."""
        return None

    def _after_propose(self, proposal: Proposal) -> None:
        """Hook: remember per-proposal data under the id just assigned."""
        return None

    def _get_state(self) -> Any:
        return None

    def _set_state(self, state: Any) -> None:
        return None


_REGISTRY: dict[str, type[Searcher]] = {}
#: modules whose searchers register on first use (they import torch and Optuna, which the API avoids)
_BUILTIN_MODULES = ("uniform", "ppo", "tpe", "gp", "evolution")


def _register_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"search_spaces.searchers.{module}")


def _check_signature(cls: type[Searcher], model: type[SearcherOptions]) -> None:
    """The searcher's keyword arguments must be its options model's fields, with the same defaults."""
    params = inspect.signature(cls.__init__).parameters
    named = {n: p for n, p in params.items() if p.kind == p.KEYWORD_ONLY}
    passes_on = any(p.kind == p.VAR_KEYWORD for p in params.values())
    fields = model.model_fields
    for name, param in named.items():
        if name not in fields:
            raise TypeError(f"{cls.__name__} takes {name!r}, which {model.__name__} does not declare")
        if param.default is not inspect.Parameter.empty and param.default != fields[name].default:
            raise TypeError(
                f"{cls.__name__}'s default {name}={param.default!r} differs from {model.__name__}'s "
                f"{fields[name].default!r}"
            )
    missing = [f for f in fields if f not in named and f != "failure_reward"]
    if missing and not passes_on:
        raise TypeError(f"{model.__name__} declares {missing}, which {cls.__name__} does not take")


def register_searcher(
    name: str, options: type[SearcherOptions] | None = None
) -> Callable[[type[Searcher]], type[Searcher]]:
    """Class decorator: make a searcher available to :func:`create_searcher` under ``name``.

    ``options`` is its typed options model (default: only the shared ones); the searcher's keyword
    arguments must match it, and a name :mod:`.options` lists (what the API checks) must use that model.
    """

    def decorate(cls: type[Searcher]) -> type[Searcher]:
        model = options or SearcherOptions
        if OPTIONS.get(name, model) is not model:
            raise TypeError(f"searcher {name!r} registers {model.__name__}; the API checks {OPTIONS[name].__name__}")
        _check_signature(cls, model)
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"searcher {name!r} is registered twice")
        cls.name = name
        cls.options_model = model
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_searchers() -> list[str]:
    """Names of the registered searchers, sorted."""
    _register_builtins()
    return sorted(_REGISTRY)


def create_searcher(name: str, space: TokenSpace, seed: int | None = None, **options: Any) -> Searcher:
    """Build the searcher registered as ``name`` over ``space``; ``options`` are its hyper-parameters,
    checked against its options model (a :class:`SpecError` at ``searcher.options.<key>``)."""
    _register_builtins()
    if name not in _REGISTRY:
        raise SpecError(f"unknown searcher {name!r}; valid searchers: {', '.join(list_searchers())}", "searcher")
    cls = _REGISTRY[name]
    try:
        checked = check_options(name, options, cls.options_model)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(["searcher", "options", *map(str, first["loc"])])
        raise SpecError(f"bad options for searcher {name!r}: {field}: {first['msg']}", field) from None
    return cls(space, seed=seed, **checked.model_dump(exclude_unset=True))
