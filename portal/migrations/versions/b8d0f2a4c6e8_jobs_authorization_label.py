"""jobs.authorization_label: the label of each job's authorization, for the list's sort

Revision ID: b8d0f2a4c6e8
Revises: f9d1e3a5b7c9
Create Date: 2026-11-30 12:20:00

The list sorted by authorization ordered by a column of another table, so no index of
jobs could serve it and every page sorted every job. The label now lives on the job too
("" for none), with an index (label, id) like every other sort. Triggers keep it, so no
write path can forget it (the ORM, a bulk insert, SQL by hand): a job's insert and every
change of its authorization_id take the label; renaming an authorization gives the new
label to its jobs.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = 'b8d0f2a4c6e8'
down_revision = 'f9d1e3a5b7c9'
branch_labels = None
depends_on = None

LABEL_OF_JOB = ("coalesce((SELECT label FROM authorizations "
                "WHERE authorizations.id = {row}.authorization_id), '')")

POSTGRES = (
    f"""CREATE FUNCTION jobs_take_authorization_label() RETURNS trigger AS $$
    BEGIN
      NEW.authorization_label := {LABEL_OF_JOB.format(row='NEW')};
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER jobs_authorization_label BEFORE INSERT OR UPDATE OF authorization_id
    ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_take_authorization_label()""",
    """CREATE FUNCTION authorizations_label_to_jobs() RETURNS trigger AS $$
    BEGIN
      UPDATE jobs SET authorization_label = NEW.label WHERE authorization_id = NEW.id;
      RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER authorizations_label_to_jobs AFTER UPDATE OF label ON authorizations
    FOR EACH ROW WHEN (OLD.label IS DISTINCT FROM NEW.label)
    EXECUTE FUNCTION authorizations_label_to_jobs()""",
)

# SQLite cannot change NEW in a BEFORE trigger: the row is updated right after instead.
SQLITE = (
    f"""CREATE TRIGGER jobs_label_insert AFTER INSERT ON jobs BEGIN
      UPDATE jobs SET authorization_label = {LABEL_OF_JOB.format(row='NEW')}
        WHERE id = NEW.id;
    END""",
    f"""CREATE TRIGGER jobs_label_update AFTER UPDATE OF authorization_id ON jobs BEGIN
      UPDATE jobs SET authorization_label = {LABEL_OF_JOB.format(row='NEW')}
        WHERE id = NEW.id;
    END""",
    """CREATE TRIGGER authorizations_label_to_jobs AFTER UPDATE OF label ON authorizations
    WHEN OLD.label IS NOT NEW.label BEGIN
      UPDATE jobs SET authorization_label = NEW.label WHERE authorization_id = NEW.id;
    END""",
)


def upgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('authorization_label', sa.String(length=200),
                                      server_default='', nullable=False))
    op.execute(f"UPDATE jobs SET authorization_label = {LABEL_OF_JOB.format(row='jobs')}")
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_authorization_label_id', ['authorization_label', 'id'],
                              unique=False)
    for statement in POSTGRES if op.get_bind().dialect.name == 'postgresql' else SQLITE:
        op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER authorizations_label_to_jobs ON authorizations")
        op.execute("DROP FUNCTION authorizations_label_to_jobs()")
        op.execute("DROP TRIGGER jobs_authorization_label ON jobs")
        op.execute("DROP FUNCTION jobs_take_authorization_label()")
    else:
        for name in ('authorizations_label_to_jobs', 'jobs_label_update', 'jobs_label_insert'):
            op.execute(f"DROP TRIGGER {name}")
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_authorization_label_id')
        batch_op.drop_column('authorization_label')
