"""user_links and users.last_login_method: invitations, reset links, how people sign in

Revision ID: e7b9d1f3a5c7
Revises: d5e7f9a1b3c4
Create Date: 2026-11-30 04:00:00

A new table and a new column with a default: nothing existing changes.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e7b9d1f3a5c7'
down_revision = 'd5e7f9a1b3c4'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('last_login_method', sa.String(length=20), nullable=False,
                                   server_default=''))
    op.create_table(
        'user_links',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('purpose', sa.String(length=10), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('used_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE',
                                name=op.f('fk_user_links_user_id_users')),
        sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], ondelete='SET NULL',
                                name=op.f('fk_user_links_created_by_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_user_links')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_user_links_token_hash')),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f('ix_user_links_user_id'), 'user_links', ['user_id'])


def downgrade():
    op.drop_index(op.f('ix_user_links_user_id'), table_name='user_links')
    op.drop_table('user_links')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('last_login_method')
