"""stream totals, field counts and profiles

Revision ID: a1c3e5f7b9d2
Revises: a3c5e7f9b1d2
Create Date: 2026-11-29 22:00:00

Streams keep running totals (message count, last ingest and event time) and the count of
each top-level field name, filled here from the messages already stored; from here on
write_messages keeps them. Profiles start empty: `flask --app wsgi data rebuild` builds
them from the stored messages.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import portal.models.types  # noqa: F401  (custom column types)


# revision identifiers, used by Alembic.
revision = 'a1c3e5f7b9d2'
down_revision = 'a3c5e7f9b1d2'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('streams', recreate='never') as batch_op:
        batch_op.add_column(sa.Column('message_count', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('last_ingested_at', portal.models.types.UTCDateTime(),
                                      nullable=True))
        batch_op.add_column(sa.Column('last_event_at', portal.models.types.UTCDateTime(),
                                      nullable=True))
    op.create_table('stream_fields',
    sa.Column('stream_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['stream_id'], ['streams.id'],
                            name=op.f('fk_stream_fields_stream_id_streams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('stream_id', 'name', name=op.f('pk_stream_fields'))
    )
    op.create_table('profiles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_at', portal.models.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_profiles')),
    sqlite_autoincrement=True
    )
    op.create_table('profile_identities',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['profile_id'], ['profiles.id'],
                            name=op.f('fk_profile_identities_profile_id_profiles'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('value', 'key', name=op.f('pk_profile_identities'))
    )
    op.create_index('ix_profile_identities_profile_id', 'profile_identities', ['profile_id'])
    op.create_table('profile_attributes',
    sa.Column('profile_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('value', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'),
              nullable=True),
    sa.Column('event_time', portal.models.types.UTCDateTime(), nullable=False),
    sa.Column('stream_id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['profile_id'], ['profiles.id'],
                            name=op.f('fk_profile_attributes_profile_id_profiles'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('profile_id', 'name', name=op.f('pk_profile_attributes'))
    )
    # Backfill the totals from the messages already stored.
    op.execute("UPDATE streams SET "
               "message_count = (SELECT count(*) FROM messages m WHERE m.stream_id = streams.id), "
               "last_ingested_at = (SELECT max(m.ingested_at) FROM messages m "
               "WHERE m.stream_id = streams.id), "
               "last_event_at = (SELECT max(m.event_time) FROM messages m "
               "WHERE m.stream_id = streams.id)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("INSERT INTO stream_fields (stream_id, name, count) "
                   "SELECT m.stream_id, left(k.name, 255), count(*) FROM messages m, "
                   "jsonb_object_keys(CASE WHEN jsonb_typeof(m.payload) = 'object' "
                   "THEN m.payload ELSE '{}'::jsonb END) AS k(name) "
                   "GROUP BY m.stream_id, left(k.name, 255)")
    else:
        op.execute("INSERT INTO stream_fields (stream_id, name, count) "
                   "SELECT m.stream_id, substr(k.key, 1, 255), count(*) FROM messages m, "
                   "json_each(CASE WHEN json_type(m.payload) = 'object' "
                   "THEN m.payload ELSE '{}' END) AS k "
                   "GROUP BY m.stream_id, substr(k.key, 1, 255)")


def downgrade():
    op.drop_table('profile_attributes')
    op.drop_index('ix_profile_identities_profile_id', table_name='profile_identities')
    op.drop_table('profile_identities')
    op.drop_table('profiles')
    op.drop_table('stream_fields')
    with op.batch_alter_table('streams', recreate='never') as batch_op:
        batch_op.drop_column('last_event_at')
        batch_op.drop_column('last_ingested_at')
        batch_op.drop_column('message_count')
