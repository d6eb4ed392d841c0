"""users.session_generation: ending every session of a user

Revision ID: a7c1e0f3b2d4
Revises: 8b6a61f2c944
Create Date: 2026-11-27 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a7c1e0f3b2d4'
down_revision = '8b6a61f2c944'
branch_labels = None
depends_on = None


def upgrade():
    # Every session and remember-me cookie carries the user's generation; bumping it ends
    # them all. Existing users start at 0 (their sessions from before end once anyway:
    # the old cookies carry no generation).
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_generation', sa.Integer(), nullable=False,
                                      server_default=sa.text('0')))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_generation')
