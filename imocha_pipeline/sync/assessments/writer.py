"""The Degreed calls behind the apply loop for Assessment content: create, patch the changed attributes, retire;
a 409 on create adopts the existing content found by a look-up (never by reading the 409's body alone)."""

from __future__ import annotations

from typing import Any

from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.errors import ConflictError, NotFoundError, UnresolvedConflictError
from imocha_pipeline.sync.assessments.mapping import DESIRED_ASSESSMENT_FIELDS
from imocha_pipeline.sync.core.apply import WriteOutcome
from imocha_pipeline.sync.core.identities import DegreedDirectory
from imocha_pipeline.sync.core.plain_values import same_value

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


def _existing_assessment(found) -> dict[str, Any]:
    return {"degreed_id": found.id, "obsolete": bool(found.obsolete), **assessment_fields(found)}


class AssessmentWriter:
    """Creates, patches and retires Degreed Assessment content keyed by external id."""

    def __init__(self, client: DegreedClient, directory: DegreedDirectory | None = None):
        self.client = client
        self.directory = directory or DegreedDirectory(None, client)

    @staticmethod
    def attributes(record: dict[str, Any], fields: list[str] | tuple[str, ...]) -> dict[str, Any]:
        return {ASSESSMENT_ATTRIBUTES[name]: record.get(name) for name in fields if name in ASSESSMENT_ATTRIBUTES}

    def create(self, record: dict[str, Any]) -> WriteOutcome:
        attributes = {"external-id": record["record_key"], **self.attributes(record, DESIRED_ASSESSMENT_FIELDS)}
        try:
            created = self.client.create_assessment(attributes)
        except ConflictError as exc:
            # Someone (or an earlier run that never heard back) created it already: adopt it.
            existing = self.find_existing(record)
            if existing is None and exc.existing_id:
                existing = self._by_id(exc.existing_id, record["record_key"])
            if existing is None:
                raise UnresolvedConflictError(
                    f"Degreed answered 409 (conflict) to creating {record['record_key']}, and has no content with "
                    "that external id that we can see: another content item may use the same launch URL, or "
                    "Degreed does not list the new content yet; tried again later",
                    api=exc.api, endpoint=exc.endpoint, status=409, detail=exc.detail) from exc
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
        return _existing_assessment(found) if found is not None else None

    def _by_id(self, degreed_id: str, external_id: str) -> dict[str, Any] | None:
        """Content by the id a 409 seemed to name, if it really is ours (the body is not documented)."""
        try:
            found = self.client.get_assessment(degreed_id)
        except NotFoundError:
            return None
        return _existing_assessment(found) if found.external_id == external_id else None
