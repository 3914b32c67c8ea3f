"""tamper-evident audit trail: seq, prev_hash, row_hash on event_history

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 09:00:00

Rows already in the trail are chained here, in id order per event, with the key the running
configuration gives (AUDIT_KEY, else SECRET_KEY): run the upgrade with the production settings.
The append-only triggers are lifted for the backfill only and put back as they were.
"""
import sqlalchemy as sa
from alembic import op
from flask import current_app

from grid_service.events import audit

# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

APPEND_ONLY_SQL = {
    "sqlite": [
        "CREATE TRIGGER event_history_no_update BEFORE UPDATE ON event_history "
        "BEGIN SELECT RAISE(ABORT, 'event_history is append-only'); END",
        "CREATE TRIGGER event_history_no_delete BEFORE DELETE ON event_history "
        "BEGIN SELECT RAISE(ABORT, 'event_history is append-only'); END",
    ],
    "postgresql": [
        "CREATE TRIGGER event_history_append_only BEFORE UPDATE OR DELETE ON event_history "
        "FOR EACH ROW EXECUTE FUNCTION event_history_append_only()",
    ],
}
DROP_SQL = {
    "sqlite": ["DROP TRIGGER IF EXISTS event_history_no_update", "DROP TRIGGER IF EXISTS event_history_no_delete"],
    "postgresql": ["DROP TRIGGER IF EXISTS event_history_append_only ON event_history"],
}


def _run(statements):
    for statement in statements.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def _backfill():
    """Chain the rows already there: seq counts up to the event's version, hashes in id order."""
    bind = op.get_bind()
    key = audit.keys_from_config(current_app.config)[0]
    history = sa.table("event_history", *(sa.column(name) for name in ("id", *audit.CONTENT, "prev_hash", "row_hash")))
    versions = dict(bind.execute(sa.text("SELECT id, version FROM events")).all())
    columns = [history.c.id, *(history.c[name] for name in audit.CONTENT if name not in ("seq", "at", "details")),
               sa.type_coerce(history.c.at, sa.String()).label("at"),
               sa.type_coerce(history.c.details, sa.String()).label("details")]
    rows = bind.execute(sa.select(*columns).order_by(history.c.event_id, history.c.id)).mappings().all()
    by_event = {}
    for row in rows:
        by_event.setdefault(row["event_id"], []).append(dict(row))
    update = (sa.update(history).where(history.c.id == sa.bindparam("row_id"))
              .values(seq=sa.bindparam("new_seq"), prev_hash=sa.bindparam("new_prev"),
                      row_hash=sa.bindparam("new_hash")))
    params = []
    for event_id, trail in by_event.items():
        # The last row's seq is the event's version, as for rows written from now on.
        first = max(1, versions.get(event_id, len(trail)) - len(trail) + 1)
        prev = audit.GENESIS
        for seq, row in enumerate(trail, start=first):
            row["seq"] = seq
            digest = audit.row_hash(key, prev, row)
            params.append({"row_id": row["id"], "new_seq": seq, "new_prev": prev, "new_hash": digest})
            prev = digest
    if params:
        bind.execute(update, params)


def upgrade():
    _run(DROP_SQL)
    with op.batch_alter_table('event_history', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seq', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('row_hash', sa.String(length=64), nullable=True))
    _backfill()
    with op.batch_alter_table('event_history', schema=None) as batch_op:
        batch_op.alter_column('seq', existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('row_hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_index('ix_event_history_event_id_id')
        batch_op.create_unique_constraint(batch_op.f('uq_event_history_event_id_seq'), ['event_id', 'seq'])
        batch_op.create_check_constraint(batch_op.f('ck_event_history_seq'), 'seq >= 1')
    _run(APPEND_ONLY_SQL)


def downgrade():
    _run(DROP_SQL)
    with op.batch_alter_table('event_history', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_event_history_seq'), type_='check')
        batch_op.drop_constraint(batch_op.f('uq_event_history_event_id_seq'), type_='unique')
        batch_op.create_index('ix_event_history_event_id_id', ['event_id', 'id'], unique=False)
        batch_op.drop_column('row_hash')
        batch_op.drop_column('prev_hash')
        batch_op.drop_column('seq')
    _run(APPEND_ONLY_SQL)
