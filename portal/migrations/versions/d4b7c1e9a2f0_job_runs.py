"""job_runs: one row per run of a job; job_events.run_id

Revision ID: d4b7c1e9a2f0
Revises: c5a2e9d41f07
Create Date: 2026-11-29 19:30:00

A run lasts from a worker's claim until the job stops running; its row sums the units
and counts its events carry, so the summary's Runs table and the job list's "last run"
never add up the log. Events written in a run name it (run_id, indexed, so the log can
be filtered to one run); no foreign key there, so a plain ADD COLUMN keeps SQLite's
job_events table (its AUTOINCREMENT) as it is.
"""
from alembic import op
import sqlalchemy as sa

from portal.models.types import UTCDateTime


# revision identifiers, used by Alembic.
revision = 'd4b7c1e9a2f0'
down_revision = 'c5a2e9d41f07'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'job_runs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('started_at', UTCDateTime(), nullable=False),
        sa.Column('ended_at', UTCDateTime(), nullable=True),
        sa.Column('units', sa.Integer(), nullable=False),
        sa.Column('added', sa.Integer(), nullable=False),
        sa.Column('removed', sa.Integer(), nullable=False),
        sa.Column('omitted', sa.Integer(), nullable=False),
        sa.Column('outcome', sa.String(length=20), nullable=True),
        sa.Column('error_code', sa.String(length=64), nullable=False),
        sa.Column('error', sa.Text(), nullable=False),
        sa.Column('idle', sa.Boolean(), nullable=False),
        sa.Column('runs', sa.Integer(), nullable=False),
        sa.Column('done', sa.Integer(), nullable=True),
        sa.Column('total', sa.Integer(), nullable=True),
        sa.Column('first_done', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sqlite_autoincrement=True,
    )
    op.create_index('ix_job_runs_job_id_id', 'job_runs', ['job_id', 'id'])
    op.add_column('job_events', sa.Column('run_id', sa.Integer(), nullable=True))
    op.create_index('ix_job_events_run_id', 'job_events', ['run_id'])


def downgrade():
    op.drop_index('ix_job_events_run_id', table_name='job_events')
    with op.batch_alter_table('job_events', recreate='never') as batch_op:
        batch_op.drop_column('run_id')
    op.drop_index('ix_job_runs_job_id_id', table_name='job_runs')
    op.drop_table('job_runs')
