"""The configured integrations, each with its compiled blueprint and its Amperity client.

Built once at start: blueprints are compiled and clients pooled per integration, so the hot
path never re-parses configuration or rebuilds mappings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

from amperity_signal.amperity.client import AmperityClient
from amperity_signal.blueprint import Blueprint
from amperity_signal.config import IntegrationSettings
from amperity_signal.config_values import holds_key
from amperity_signal.enrich.messages import not_configured
from amperity_signal.errors import FieldViolation, InvalidFields, UnknownIntegration
from amperity_signal.logs import SCRUB_MIN_LENGTH

# The most of a caller's integration id an error repeats (configured ids are shorter).
_ECHOED_ID = 200


@dataclass(frozen=True)
class Integration:
    """One integration, ready to use."""

    settings: IntegrationSettings
    blueprint: Blueprint
    client: AmperityClient

    @property
    def id(self) -> str:
        """The integration id."""
        return self.settings.id

    @cached_property
    def enrichment_reads_context(self) -> bool:
        """Whether enriching an event reads its ``context``.

        Only a personalisation mapping can (``context.*``): identifiers and the attributes
        never come from it. Enrich converts the context for these integrations alone.
        """
        mappings = self.settings.personalisation_context_mappings
        return any(mapping.source.split(".", 1)[0] == "context" for mapping in mappings)

    @cached_property
    def enrichment_gap(self) -> str | None:
        """The warning each delivered event carries when enrichment is half configured.

        Some but not all of profile_api_key, profile_collection_id and linking_keys set:
        the user meant to enrich, and the spec sends them to Live Events for the "partner
        resolve failed" warning. None when enrichment is on, or when none of them is set.
        """
        settings = self.settings
        return (
            not_configured(settings.enrichment_missing)
            if settings.enrichment_half_configured
            else None
        )


class Registry:
    """Finds integrations by id or by pipeline key.

    Args:
        integrations: The configured integrations.
        secrets: The configuration's secrets (``Settings.secret_values``): an id sent
            holding one is described in errors, never repeated.
    """

    def __init__(self, integrations: list[Integration], secrets: Iterable[str] = ()) -> None:
        self._by_id = {i.id: i for i in integrations}
        self._by_key = {i.settings.pipeline_key: i for i in integrations}
        # Found inside a longer id too when long enough to be no ordinary word (as logs scrub).
        self._secrets = frozenset(s for s in secrets if s)
        self._long_secrets = tuple(s for s in self._secrets if len(s) >= SCRUB_MIN_LENGTH)

    def __iter__(self) -> Iterator[Integration]:
        return iter(self._by_id.values())

    def get(self, integration_id: str = "", pipeline_key: str = "") -> Integration:
        """The integration with this id (or, when no id is given, this pipeline key).

        Both given, they must name the same integration: routing by the id alone would
        answer a page for another integration's visitors.

        Raises:
            UnknownIntegration: When none matches; the message says what was asked for.
            InvalidFields: When neither is given, or the two name different integrations
                (reason ``INVALID_REQUEST``: which integration is the request's, not
                the event's, business).
        """
        if integration_id:
            found = self._by_id.get(integration_id)
            if found is None:
                shown, named = self._shown(integration_id)
                known = ", ".join(sorted(self._by_id)) or "none"
                raise UnknownIntegration(
                    f"no integration with id {named} is configured (configured: "
                    f"{known}); check integration_id or the [[integrations]] tables.",
                    metadata={"integration_id": shown, "configured": known},
                )
            if pipeline_key and pipeline_key != found.settings.pipeline_key:
                raise InvalidFields(
                    [
                        FieldViolation(
                            "pipeline_key",
                            f"is not the pipeline key of integration {integration_id!r}, "
                            "so the request names two integrations (or none): send only "
                            "integration_id, only the pipeline key, or the pair of one "
                            "integration.",
                        )
                    ],
                    metadata={"integration_id": integration_id},
                )
            return found
        if pipeline_key:
            found = self._by_key.get(pipeline_key)
            if found is None:
                raise UnknownIntegration(
                    "no integration has this pipeline key; check the pipeline key the page "
                    "or caller was built with against the integration's pipeline_key.",
                    metadata={"pipeline_key_length": str(len(pipeline_key))},
                )
            return found
        raise InvalidFields(
            [
                FieldViolation(
                    "integration_id",
                    "is required: name the configured integration to use, or send its "
                    "pipeline key as x-pipeline-key metadata (BrowserProfile also takes "
                    "it in pipeline_key).",
                )
            ]
        )

    def _shown(self, integration_id: str) -> tuple[str, str]:
        """A caller's integration id as errors repeat it, in metadata and in a message.

        Cut: a caller's id of any length, whole, made the status's trailers larger than
        gRPC's metadata limit (the caller got RESOURCE_EXHAUSTED). An API key, a pipeline
        key or any other configured secret (the admin token, a Redis password) sent as the
        id, or in it (a variable mixed up), is described: errors never quote one.
        """
        if holds_key(integration_id):
            described = "<an API key, by its look: send the integration's id>"
        elif integration_id in self._by_key:
            described = "<a pipeline key: send it as x-pipeline-key, or the integration's id>"
        elif integration_id in self._secrets or any(
            secret in integration_id for secret in self._long_secrets
        ):
            described = (
                "<a configured secret (a key, token or password): send the integration's id>"
            )
        else:
            cut = integration_id[:_ECHOED_ID]
            return cut, repr(cut)
        return described, described

    async def aclose(self) -> None:
        """Close every client's connection pool."""
        for integration in self._by_id.values():
            await integration.client.aclose()
