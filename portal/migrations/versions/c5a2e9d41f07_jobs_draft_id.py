"""jobs.draft_id: the wizard draft a job was created from

Revision ID: c5a2e9d41f07
Revises: b3d9f2a6c8e1
Create Date: 2026-11-29 19:00:00

A draft is deleted when it becomes a job; a page of that draft left open (the browser's
Back after Create) then finds nothing. The job keeps the draft's id, so the wizard can
say "this draft became job N". Draft ids are never reused, so the number stays
unambiguous; no foreign key, as the draft row is gone. A plain ADD COLUMN: SQLite keeps
the table (its AUTOINCREMENT and triggers) as it is.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c5a2e9d41f07'
down_revision = 'b3d9f2a6c8e1'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('jobs', sa.Column('draft_id', sa.Integer(), nullable=True))
    op.create_index('ix_jobs_draft_id', 'jobs', ['draft_id'])


def downgrade():
    op.drop_index('ix_jobs_draft_id', table_name='jobs')
    with op.batch_alter_table('jobs', recreate='never') as batch_op:
        batch_op.drop_column('draft_id')
