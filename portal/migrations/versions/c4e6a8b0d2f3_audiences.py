"""audiences: named filters over profile attributes

Revision ID: c4e6a8b0d2f3
Revises: b3c5d7e9f1a2
Create Date: 2026-11-30 00:10:00

A new table only: nothing existing changes.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from portal.models.types import UTCDateTime

# revision identifiers, used by Alembic.
revision = 'c4e6a8b0d2f3'
down_revision = 'b3c5d7e9f1a2'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'audiences',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('slug', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('match', sa.String(length=8), nullable=False),
        sa.Column('conditions', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'),
                  nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['created_by_id'], ['users.id'],
                                name=op.f('fk_audiences_created_by_id_users'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audiences')),
        sa.UniqueConstraint('slug', name=op.f('uq_audiences_slug')),
        sqlite_autoincrement=True,
    )
    op.create_index('uq_audiences_name_lower', 'audiences', [sa.text('lower(name)')],
                    unique=True)


def downgrade():
    op.drop_index('uq_audiences_name_lower', table_name='audiences')
    op.drop_table('audiences')
