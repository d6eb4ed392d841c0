"""jobs: index (status, error_count) in place of (status)

Revision ID: 8f1666b54e9b
Revises: f2b8d4a6c1e3
Create Date: 2026-11-29 21:30:00

The job list's Retrying tab counts sleeping jobs with errors. Through the status index
alone that reads every sleeping job (11 ms of a 23 ms list at 100,000 jobs, a fifth of
them sleeping); with error_count after status in the same index it is a range of the
index holding only the retrying jobs. Status alone is the index's first column, so the
queries by status use it as they used the old one, which goes.
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '8f1666b54e9b'
down_revision = 'f2b8d4a6c1e3'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_jobs_status_error_count', 'jobs', ['status', 'error_count'],
                    unique=False)
    op.drop_index('ix_jobs_status', table_name='jobs')


def downgrade():
    op.create_index('ix_jobs_status', 'jobs', ['status'], unique=False)
    op.drop_index('ix_jobs_status_error_count', table_name='jobs')
