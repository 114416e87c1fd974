"""What one entity needs on its way to Degreed, described once (``EntitySpec``): how its records are keyed and
compared, what a write carries, where its source attempt is, the pandera model its payload must pass, and the
writer that talks to Degreed. The three specs live with their entity (``assessments/entity.py``,
``completions/entity.py``); ``sync/entities.py`` lists them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EntitySpec:
    """How one entity is keyed, compared, validated and written.

    ``key``: the natural key column of the desired frame; ``fields``: the Degreed attributes we own and compare
    (snake_case); ``payload``: further columns a write needs; ``retire_missing``: retire records Degreed has that
    the desired state no longer has (assessments); ``per_attempt``: records come from iMocha attempts (the
    latest attempt wins; the action is decided at send time from the ledger); ``needs_assessment``: a record
    waits until its assessment is in Degreed; ``model``: the pandera model of an outgoing payload; ``writer``:
    builds the entity's writer from a Degreed client and a ``DegreedDirectory``.
    """

    name: str
    key: str
    fields: tuple[str, ...]
    payload: tuple[str, ...] = ()
    retire_missing: bool = False
    per_attempt: bool = False
    needs_assessment: bool = False
    model: type | None = None
    writer: Callable[..., Any] | None = None
    float_places: int = 6

    @property
    def all_fields(self) -> tuple[str, ...]:
        return (*self.fields, *self.payload)

    def writer_for(self, client: Any, directory: Any = None) -> Any:
        """The entity's writer (``sync/core/apply.EntityWriter``) for this client."""
        if self.writer is None:
            raise ValueError(f"entity {self.name} has no writer")
        return self.writer(client, directory)
