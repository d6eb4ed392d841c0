"""The provider catalog: every provider that really works, by key."""

from __future__ import annotations

from providers import files
from providers.base import JobType, Provider

CATALOG: dict[str, Provider] = {provider.key: provider for provider in (files.PROVIDER,)}


def get_provider(key: str) -> Provider | None:
    return CATALOG.get(key)


def get_job_type(provider_key: str, job_type_key: str) -> tuple[Provider, JobType] | None:
    """The provider and job type for these keys, or None when either is unknown."""
    provider = CATALOG.get(provider_key)
    job_type = provider.job_type(job_type_key) if provider else None
    return (provider, job_type) if provider and job_type else None
