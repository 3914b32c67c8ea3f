"""a notification goes to a unit or to one person (a handler's inbox); kinds rework, extended, returned

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 21:00:00
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

OLD_KINDS = ('warning', 'escalated', 'breached', 'supervise', 'urge', 'dispatched')
NEW_KINDS = OLD_KINDS + ('rework', 'extended', 'returned')


def _kinds(kinds):
    return f"kind IN ({', '.join(repr(k) for k in kinds)})"


def upgrade():
    # On SQLite the batch rebuilds the table (new column, nullable unit_id, new CHECKs).
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('user_id', sa.Integer(), nullable=True))
        batch_op.alter_column('unit_id', existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key(batch_op.f('fk_notifications_user_id_users'), 'users', ['user_id'], ['id'])
        batch_op.drop_constraint(batch_op.f('ck_notifications_kind'), type_='check')
        batch_op.create_check_constraint('kind', _kinds(NEW_KINDS))
        batch_op.create_check_constraint('recipient', '(unit_id IS NULL) <> (user_id IS NULL)')
        batch_op.create_index('ix_notifications_user_id_id', ['user_id', 'id'], unique=False)


def downgrade():
    # Personal notifications and the new kinds cannot be expressed in the old schema.
    op.execute(sa.text(f"DELETE FROM notifications WHERE user_id IS NOT NULL OR NOT ({_kinds(OLD_KINDS)})"))
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_user_id_id')
        batch_op.drop_constraint(batch_op.f('ck_notifications_recipient'), type_='check')
        batch_op.drop_constraint(batch_op.f('ck_notifications_kind'), type_='check')
        batch_op.create_check_constraint('kind', _kinds(OLD_KINDS))
        batch_op.drop_constraint(batch_op.f('fk_notifications_user_id_users'), type_='foreignkey')
        batch_op.alter_column('unit_id', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('user_id')
