"""Every table, imported in one place so metadata (and Alembic) sees the whole schema."""

from dataspace.catalog.models import Dimension, Field, FieldVersion, Purpose
from dataspace.db import Base
from dataspace.partners.models import Partner
from dataspace.subjects.models import Subject, SubjectKey, SubjectProfile

__all__ = [
    "Base",
    "Dimension",
    "Field",
    "FieldVersion",
    "Partner",
    "Purpose",
    "Subject",
    "SubjectKey",
    "SubjectProfile",
]
