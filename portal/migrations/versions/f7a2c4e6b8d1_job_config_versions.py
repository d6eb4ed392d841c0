"""job_config_versions: every change of a job's configuration; edit drafts

Revision ID: f7a2c4e6b8d1
Revises: e6f1a3c5b7d9
Create Date: 2026-11-29 21:20:00

"Edit configuration" on a job's summary goes through the wizard's configure and schedule
steps with a draft tied to the job (job_drafts.job_id, and the version it started from);
Save records a version with who, when and the changes. Existing jobs get their version 1
("Created") from their own row, so every job's Changes list starts with its creation.
Plain ADD COLUMNs without foreign keys keep SQLite's job_drafts table (its AUTOINCREMENT)
as it is.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from portal.models.types import UTCDateTime


# revision identifiers, used by Alembic.
revision = 'f7a2c4e6b8d1'
down_revision = 'e6f1a3c5b7d9'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'job_config_versions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.Column('by_id', sa.Integer(), nullable=True),
        sa.Column('summary', sa.String(length=200), nullable=False),
        sa.Column('changes', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'),
                  nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['by_id'], ['users.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sqlite_autoincrement=True,
    )
    op.create_index('ix_job_config_versions_job_id_version', 'job_config_versions',
                    ['job_id', 'version'], unique=True)
    op.execute(
        "INSERT INTO job_config_versions (job_id, version, at, by_id, summary, changes) "
        "SELECT id, 1, created_at, created_by_id, 'Created', '[]' FROM jobs"
    )
    op.add_column('job_drafts', sa.Column('job_id', sa.Integer(), nullable=True))
    op.add_column('job_drafts', sa.Column('base_version', sa.Integer(), nullable=True))
    op.create_index('ix_job_drafts_job_id', 'job_drafts', ['job_id'])


def downgrade():
    op.drop_index('ix_job_drafts_job_id', table_name='job_drafts')
    with op.batch_alter_table('job_drafts', recreate='never') as batch_op:
        batch_op.drop_column('base_version')
        batch_op.drop_column('job_id')
    op.drop_index('ix_job_config_versions_job_id_version', table_name='job_config_versions')
    op.drop_table('job_config_versions')
