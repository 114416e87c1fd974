"""Entity writers: the Degreed calls behind the generic apply loop, one class per entity."""

from __future__ import annotations

from typing import Any

from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.errors import ConflictError
from imocha_pipeline.sync.apply import WriteOutcome
from imocha_pipeline.sync.mapping import DESIRED_ASSESSMENT_FIELDS
from imocha_pipeline.sync.values import same_value

# Our snake_case fields and the kebab-case attributes Degreed speaks.
ASSESSMENT_ATTRIBUTES = {
    "title": "title",
    "summary": "summary",
    "url": "url",
    "duration": "duration",
    "duration_type": "duration-type",
    "language": "language",
    "obsolete": "obsolete",
}


def assessment_fields(record: Any) -> dict[str, Any]:
    """Our field values as read back from a ``DegreedAssessment``."""
    return {name: getattr(record, name, None) for name in DESIRED_ASSESSMENT_FIELDS}


class AssessmentWriter:
    """Creates, patches and retires Degreed Assessment content keyed by external id."""

    def __init__(self, client: DegreedClient):
        self.client = client

    @staticmethod
    def attributes(record: dict[str, Any], fields: list[str] | tuple[str, ...]) -> dict[str, Any]:
        return {ASSESSMENT_ATTRIBUTES[name]: record.get(name) for name in fields if name in ASSESSMENT_ATTRIBUTES}

    def create(self, record: dict[str, Any]) -> WriteOutcome:
        attributes = {"external-id": record["record_key"], **self.attributes(record, DESIRED_ASSESSMENT_FIELDS)}
        try:
            created = self.client.create_assessment(attributes)
        except ConflictError:
            # Someone (or an earlier run that never heard back) created it already: adopt it.
            existing = self.find_existing(record)
            if existing is None:
                raise
            changed = [n for n in DESIRED_ASSESSMENT_FIELDS if not same_value(existing.get(n), record.get(n))]
            if existing.get("obsolete"):
                changed.append("obsolete")
            if changed:
                self.update(existing["degreed_id"], record, changed)
            return WriteOutcome(existing["degreed_id"], "adopted")
        return WriteOutcome(created.id, "create")

    def update(self, degreed_id: str, record: dict[str, Any], changed_fields: list[str]) -> WriteOutcome:
        fields = [name for name in changed_fields if name != "obsolete"]
        attributes = self.attributes(record, fields)
        if "obsolete" in changed_fields:
            attributes["obsolete"] = False
        if attributes:
            self.client.update_assessment(degreed_id, attributes)
        return WriteOutcome(degreed_id, "update")

    def retire(self, degreed_id: str, record: dict[str, Any]) -> WriteOutcome:
        self.client.update_assessment(degreed_id, {"obsolete": True})
        return WriteOutcome(degreed_id, "retire")

    def find_existing(self, record: dict[str, Any]) -> dict[str, Any] | None:
        found = self.client.find_assessment(record["record_key"])
        if found is None:
            return None
        return {"degreed_id": found.id, "obsolete": bool(found.obsolete), **assessment_fields(found)}
