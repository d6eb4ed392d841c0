"""job_metric_hours: hourly rollups of each job's event counts; an index per list sort

Revision ID: f9d1e3a5b7c9
Revises: e6a8c0b2d4f6
Create Date: 2026-11-30 05:00:00

The rollups are filled from the events already written, one INSERT ... SELECT grouped by
the UTC hour (date_trunc on PostgreSQL, strftime on SQLite). Counts are read as
portal.metrics reads them: an integer, or text holding one; anything else counts 0, and
hours whose counts are all 0 get no row.
"""
from alembic import op
import sqlalchemy as sa

from portal.models.jobs import NO_RUN
from portal.models.types import UTCDateTime

# revision identifiers, used by Alembic.
revision = 'f9d1e3a5b7c9'
down_revision = 'e6a8c0b2d4f6'
branch_labels = None
depends_on = None

COUNTS = ('added', 'removed', 'omitted')


def _count_sql(dialect: str, key: str) -> str:
    if dialect == 'postgresql':
        value = f"context->'{key}'"
        return (f"CASE WHEN jsonb_typeof({value}) = 'number' "
                f"THEN trunc(({value})::numeric)::bigint "
                f"WHEN jsonb_typeof({value}) = 'string' AND {value} #>> '{{}}' ~ "
                f"'^\\s*[-+]?[0-9]{{1,18}}\\s*$' THEN trim({value} #>> '{{}}')::bigint "
                f"ELSE 0 END")
    # SQLite: CAST gives the leading integer of text (0 for none) and truncates a real.
    return (f"CASE WHEN json_type(context, '$.{key}') IN ('integer', 'real') "
            f"THEN CAST(json_extract(context, '$.{key}') AS INTEGER) "
            f"WHEN json_type(context, '$.{key}') = 'text' AND "
            f"trim(json_extract(context, '$.{key}')) GLOB '[0-9]*' AND "
            f"trim(json_extract(context, '$.{key}')) NOT GLOB '*[^0-9]*' "
            f"THEN CAST(json_extract(context, '$.{key}') AS INTEGER) ELSE 0 END")


def upgrade():
    op.create_table(
        'job_metric_hours',
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('hour', UTCDateTime(), nullable=False),
        sa.Column('added', sa.BigInteger(), nullable=False),
        sa.Column('removed', sa.BigInteger(), nullable=False),
        sa.Column('omitted', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('job_id', 'hour'),
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_name_id', ['name', 'id'], unique=False)
        batch_op.create_index('ix_jobs_provider_id', ['provider', 'id'], unique=False)
        batch_op.create_index('ix_jobs_kind_id', ['kind', 'id'], unique=False)
        batch_op.create_index('ix_jobs_status_id', ['status', 'id'], unique=False)
    jobs = sa.table('jobs', sa.column('id'), sa.column('last_run_at', UTCDateTime()),
                    sa.column('next_run_at', UTCDateTime()))
    op.create_index('ix_jobs_last_run_id', 'jobs',
                    [sa.func.coalesce(jobs.c.last_run_at, NO_RUN), jobs.c.id])
    op.create_index('ix_jobs_next_run_id', 'jobs',
                    [sa.func.coalesce(jobs.c.next_run_at, NO_RUN), jobs.c.id])

    bind = op.get_bind()
    dialect = bind.dialect.name
    hour = ("date_trunc('hour', at)" if dialect == 'postgresql'
            else "strftime('%Y-%m-%d %H:00:00.000000', at)")
    counts = {key: _count_sql(dialect, key) for key in COUNTS}
    op.execute(
        f"INSERT INTO job_metric_hours (job_id, hour, added, removed, omitted) "
        f"SELECT job_id, hour, added, removed, omitted FROM ("
        f"SELECT job_id, {hour} AS hour, sum({counts['added']}) AS added, "
        f"sum({counts['removed']}) AS removed, sum({counts['omitted']}) AS omitted "
        f"FROM job_events GROUP BY job_id, {hour}) AS hours "
        f"WHERE added <> 0 OR removed <> 0 OR omitted <> 0")


def downgrade():
    op.drop_index('ix_jobs_next_run_id', table_name='jobs')
    op.drop_index('ix_jobs_last_run_id', table_name='jobs')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_status_id')
        batch_op.drop_index('ix_jobs_kind_id')
        batch_op.drop_index('ix_jobs_provider_id')
        batch_op.drop_index('ix_jobs_name_id')
    op.drop_table('job_metric_hours')
