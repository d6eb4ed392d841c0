"""All models, one module per aggregate; importing this registers every table."""

from portal.models.audit import AuditEntry
from portal.models.data import Message, Stream, Upload
from portal.models.jobs import Job, JobEvent
from portal.models.users import ROLES, User
from portal.models.vault import Authorization, AuthorizationVersion

__all__ = ["ROLES", "AuditEntry", "Authorization", "AuthorizationVersion", "Job", "JobEvent",
           "Message", "Stream", "Upload", "User"]
