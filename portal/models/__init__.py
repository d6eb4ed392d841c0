"""All models, one module per aggregate; importing this registers every table."""

from portal.models.alerts import AlertRule, AlertSent, AlertState
from portal.models.audiences import Audience
from portal.models.audit import AuditEntry
from portal.models.data import BulkImport, Message, Stream, StreamField, Upload
from portal.models.exports import ExportMember
from portal.models.jobs import (
    Draft,
    Job,
    JobConfigVersion,
    JobEvent,
    JobMetricHour,
    JobRun,
    JobStatusCount,
)
from portal.models.profiles import Profile, ProfileAttribute, ProfileIdentity
from portal.models.tokens import AccessToken
from portal.models.users import ROLES, User, UserLink
from portal.models.vault import Authorization, AuthorizationVersion

__all__ = ["ROLES", "AccessToken", "AlertRule", "AlertSent", "AlertState", "Audience",
           "AuditEntry", "Authorization",
           "AuthorizationVersion", "BulkImport", "Draft", "ExportMember", "Job",
           "JobConfigVersion",
           "JobEvent", "JobMetricHour", "JobRun", "JobStatusCount", "Message", "Profile",
           "ProfileAttribute",
           "ProfileIdentity", "Stream", "StreamField", "Upload", "User", "UserLink"]
