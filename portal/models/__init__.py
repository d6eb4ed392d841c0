"""All models, one module per aggregate; importing this registers every table."""

from portal.models.data import Message, Stream, Upload
from portal.models.jobs import Job, JobEvent
from portal.models.users import ROLES, User
from portal.models.vault import Authorization

__all__ = ["ROLES", "Authorization", "Job", "JobEvent", "Message", "Stream", "Upload", "User"]
