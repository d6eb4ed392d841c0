"""users.timezone: the time zone a person reads times in

Revision ID: f2b8d4a6c1e3
Revises: f7a2c4e6b8d1
Create Date: 2026-11-29 21:15:00

A plain ADD COLUMN with a server default of "UTC", how every time showed before: existing
users see no change until they pick a zone on their Settings page.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'f2b8d4a6c1e3'
down_revision = 'f7a2c4e6b8d1'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('users', sa.Column('timezone', sa.String(length=64), nullable=False,
                                     server_default='UTC'))


def downgrade():
    with op.batch_alter_table('users', recreate='never') as batch_op:
        batch_op.drop_column('timezone')
