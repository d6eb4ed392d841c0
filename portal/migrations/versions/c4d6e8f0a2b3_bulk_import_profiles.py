"""bulk_imports: where building profiles from an import's messages has got to

Revision ID: c4d6e8f0a2b3
Revises: c4e6a8b0d2f3
Create Date: 2026-11-30 00:30:00

A bulk import writes its rows first and builds profiles from them afterwards, a batch at a
time; these columns say which messages it wrote and how far the profiles have come.
Imports written before this revision built their profiles as they wrote: they count as
done (profiled_through = 0 with no message range means nothing is pending).
"""
from alembic import op
import sqlalchemy as sa

from portal.models.types import UTCDateTime

# revision identifiers, used by Alembic.
revision = 'c4d6e8f0a2b3'
down_revision = 'c4e6a8b0d2f3'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('bulk_imports') as batch:
        batch.add_column(sa.Column('first_message_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('last_message_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('profiled_through', sa.Integer(), nullable=False,
                                   server_default='0'))
        batch.add_column(sa.Column('profiled', sa.Integer(), nullable=False,
                                   server_default='0'))
        batch.add_column(sa.Column('profiles_finished_at', UTCDateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('bulk_imports') as batch:
        batch.drop_column('profiles_finished_at')
        batch.drop_column('profiled')
        batch.drop_column('profiled_through')
        batch.drop_column('last_message_id')
        batch.drop_column('first_message_id')
