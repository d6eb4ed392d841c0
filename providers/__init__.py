"""The provider catalog: every provider that really works, by key."""

from __future__ import annotations

import os

from providers import faults, files, hubspot, mailchimp, s3, slack, sql, webhook
from providers.base import JobType, Provider

CATALOG: dict[str, Provider] = {
    provider.key: provider
    for provider in (files.PROVIDER, hubspot.PROVIDER, mailchimp.PROVIDER, s3.PROVIDER,
                     slack.PROVIDER, webhook.PROVIDER, sql.POSTGRESQL, sql.MYSQL)
}

# Found by key only when PORTAL_TEST_PROVIDERS=1; never shown as a tile.
_TEST_ONLY: dict[str, Provider] = {faults.PROVIDER.key: faults.PROVIDER}


def get_provider(key: str) -> Provider | None:
    if key in CATALOG:
        return CATALOG[key]
    if os.environ.get("PORTAL_TEST_PROVIDERS") == "1":
        return _TEST_ONLY.get(key)
    return None


def get_job_type(provider_key: str, job_type_key: str) -> tuple[Provider, JobType] | None:
    """The provider and job type for these keys, or None when either is unknown."""
    provider = get_provider(provider_key)
    job_type = provider.job_type(job_type_key) if provider else None
    return (provider, job_type) if provider and job_type else None


def known_providers() -> list[Provider]:
    """Every provider get_provider finds: the catalog, and the test-only ones when on."""
    found = list(CATALOG.values())
    if os.environ.get("PORTAL_TEST_PROVIDERS") == "1":
        found += _TEST_ONLY.values()
    return found
