"""the hotline hears every change of its petition's state or deadline: accepted, reworked, suspended,
resumed, extended, reclassified join the outbox's message kinds

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 09:50:00
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

OLD_KINDS = ('registered', 'dispatched', 'escalated', 'returned', 'resolved', 'closed', 'rejected', 'reopened',
             'merged', 'cancelled')
NEW_KINDS = OLD_KINDS + ('accepted', 'reworked', 'suspended', 'resumed', 'extended', 'reclassified')


def _kinds(kinds):
    return f"kind IN ({', '.join(repr(k) for k in kinds)})"


def _replace_check(kinds):
    # On SQLite the batch rebuilds the table with the new CHECK; on PostgreSQL it is two ALTERs.
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_outbox_kind'), type_='check')
        batch_op.create_check_constraint('kind', _kinds(kinds))


def upgrade():
    _replace_check(NEW_KINDS)


def downgrade():
    # Messages of the new kinds cannot be expressed in the old schema.
    op.execute(sa.text(f"DELETE FROM outbox WHERE NOT ({_kinds(OLD_KINDS)})"))
    _replace_check(OLD_KINDS)
