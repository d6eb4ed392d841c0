"""bulk_imports: uploads to the bulk API, their settings and what processing found

Revision ID: b3c5d7e9f1a2
Revises: a1c3e5f7b9d2
Create Date: 2026-11-29 22:00:00

A new table only: nothing existing changes.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from portal.models.types import UTCDateTime

# revision identifiers, used by Alembic.
revision = 'b3c5d7e9f1a2'
down_revision = 'a1c3e5f7b9d2'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'bulk_imports',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('stream', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('format', sa.String(length=10), nullable=False),
        sa.Column('compressed', sa.Boolean(), nullable=False),
        sa.Column('timestamp_field', sa.String(length=255), nullable=False),
        sa.Column('delimiter', sa.String(length=1), nullable=False),
        sa.Column('dryrun', sa.Boolean(), nullable=False),
        sa.Column('droperrors', sa.Boolean(), nullable=False),
        sa.Column('source', sa.String(length=64), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('spool_path', sa.String(length=1024), nullable=True),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('rows_read', sa.Integer(), nullable=False),
        sa.Column('rows_written', sa.Integer(), nullable=False),
        sa.Column('duplicates', sa.Integer(), nullable=False),
        sa.Column('rejected', sa.Integer(), nullable=False),
        sa.Column('errors', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'),
                  nullable=False),
        sa.Column('message', sa.String(length=1000), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('started_at', UTCDateTime(), nullable=True),
        sa.Column('finished_at', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sqlite_autoincrement=True,
    )


def downgrade():
    op.drop_table('bulk_imports')
