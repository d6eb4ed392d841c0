"""alerts: rules, what each rule last notified per job, and the alerts sent

Revision ID: e6a8c0b2d4f6
Revises: d5e7f9a1b3c4
Create Date: 2026-11-30 03:55:00

New tables only: nothing existing changes.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from portal.models.types import UTCDateTime

# revision identifiers, used by Alembic.
revision = 'e6a8c0b2d4f6'
down_revision = 'e7b9d1f3a5c7'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade():
    op.create_table(
        'alert_rules',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('scope', sa.String(length=20), nullable=False),
        sa.Column('scope_value', sa.String(length=200), nullable=False),
        sa.Column('conditions', JSON, nullable=False),
        sa.Column('rate_limit_minutes', sa.Integer(), nullable=False),
        sa.Column('channel', sa.String(length=20), nullable=False),
        sa.Column('target', JSON, nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sqlite_autoincrement=True,
    )
    op.create_table(
        'alert_states',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('rule_id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('changed_at', UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['rule_id'], ['alert_rules.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sqlite_autoincrement=True,
    )
    op.create_index('ix_alert_states_rule_job', 'alert_states', ['rule_id', 'job_id'],
                    unique=True)
    op.create_index('ix_alert_states_job_id', 'alert_states', ['job_id'])
    op.create_table(
        'alerts_sent',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('rule_id', sa.Integer(), nullable=True),
        sa.Column('rule_name', sa.String(length=200), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=True),
        sa.Column('job_name', sa.String(length=200), nullable=False),
        sa.Column('condition', sa.String(length=20), nullable=False),
        sa.Column('recovery', sa.Boolean(), nullable=False),
        sa.Column('channel', sa.String(length=20), nullable=False),
        sa.Column('target_shown', sa.String(length=300), nullable=False),
        sa.Column('subject', sa.String(length=300), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('link', sa.String(length=500), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('error', sa.Text(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('sent_at', UTCDateTime(), nullable=False),
        sa.Column('queued_at', UTCDateTime(), nullable=True),
        sa.Column('next_attempt_at', UTCDateTime(), nullable=True),
        sa.Column('delivered_at', UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['rule_id'], ['alert_rules.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sqlite_autoincrement=True,
    )
    op.create_index('ix_alerts_sent_rule_id', 'alerts_sent', ['rule_id'])
    op.create_index('ix_alerts_sent_job_id', 'alerts_sent', ['job_id'])
    op.create_index('ix_alerts_sent_status', 'alerts_sent', ['status'])
    op.create_index('ix_alerts_sent_sent_at_id', 'alerts_sent', ['sent_at', 'id'])


def downgrade():
    op.drop_table('alerts_sent')
    op.drop_table('alert_states')
    op.drop_table('alert_rules')
