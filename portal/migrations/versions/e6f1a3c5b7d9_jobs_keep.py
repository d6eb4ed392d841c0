"""jobs.keep: a job kept from the purge

Revision ID: e6f1a3c5b7d9
Revises: d4b7c1e9a2f0
Create Date: 2026-11-29 19:30:00

The purge deletes failed, paused and completed jobs after PORTAL_PURGE_DAYS; a completed
job cannot be resumed, so a person needs another way to keep one. A plain ADD COLUMN with
a server default of false: existing jobs stay as they were (purged in time), and SQLite
keeps the table (its AUTOINCREMENT and triggers) as it is.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e6f1a3c5b7d9'
down_revision = 'd4b7c1e9a2f0'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('jobs', sa.Column('keep', sa.Boolean(), nullable=False,
                                    server_default=sa.false()))


def downgrade():
    with op.batch_alter_table('jobs', recreate='never') as batch_op:
        batch_op.drop_column('keep')
