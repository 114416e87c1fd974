"""Ids of the simulated records, paging cursors and error bodies: seeded, never handed out twice."""

from __future__ import annotations

import random
import string
import uuid

ID_ALPHABET = string.ascii_letters + string.digits


class IdMint:
    """Two seeded streams of ids drawn from one pool of used ids.

    Record ids come from their own stream, so reads (cursors, snapshots) and errors never shift them; the
    other stream names paging snapshots and cursors and the ``id`` of every JSON:API error.
    """

    def __init__(self, seed: object):
        self._records = random.Random(f"degreed-sim-{seed}")
        self._aux = random.Random(f"degreed-sim-aux-{seed}")
        self._used: set[str] = set()

    def record_id(self, length: int) -> str:
        """A new id for a user, provider, content item, completion or skill rating."""
        return self._draw(length, self._records)

    def aux_id(self, length: int) -> str:
        """A new id for a paging snapshot or cursor."""
        return self._draw(length, self._aux)

    def error_id(self) -> str:
        """A UUID for the ``id`` of a JSON:API error."""
        return str(uuid.UUID(int=self._aux.getrandbits(128), version=4))

    def _draw(self, length: int, rng: random.Random) -> str:
        while True:
            candidate = "".join(rng.choice(ID_ALPHABET) for _ in range(length))
            if candidate not in self._used:
                self._used.add(candidate)
                return candidate
