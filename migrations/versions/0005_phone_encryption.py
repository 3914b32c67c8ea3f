"""citizens' phone numbers sealed at rest (ciphertext, blind index, masked form); pii_access_log

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 09:00:00

The numbers already stored are sealed and indexed here with the key the running configuration gives
(SECRET_KEY): run the upgrade with the production settings. Values that are no phone number (the old
demo's "138****1234") keep only a masked form; other malformed ones are sealed as they were, unindexed.
The plaintext column is then dropped. The downgrade decrypts back into it.
"""
import sqlalchemy as sa
from alembic import op
from flask import current_app

import grid_service.infra.timeutil
from grid_service.privacy import phones

# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

BATCH = 1000
APPEND_ONLY_SQL = {
    "sqlite": [
        "CREATE TRIGGER pii_access_log_no_update BEFORE UPDATE ON pii_access_log "
        "BEGIN SELECT RAISE(ABORT, 'pii_access_log is append-only'); END",
        "CREATE TRIGGER pii_access_log_no_delete BEFORE DELETE ON pii_access_log "
        "BEGIN SELECT RAISE(ABORT, 'pii_access_log is append-only'); END",
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION pii_access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'pii_access_log is append-only'; END $$",
        "CREATE TRIGGER pii_access_log_append_only BEFORE UPDATE OR DELETE ON pii_access_log "
        "FOR EACH ROW EXECUTE FUNCTION pii_access_log_append_only()",
    ],
}
DROP_SQL = {
    "sqlite": ["DROP TRIGGER IF EXISTS pii_access_log_no_update", "DROP TRIGGER IF EXISTS pii_access_log_no_delete"],
    "postgresql": ["DROP TRIGGER IF EXISTS pii_access_log_append_only ON pii_access_log",
                   "DROP FUNCTION IF EXISTS pii_access_log_append_only()"],
}
events = sa.table("events", *(sa.column(name) for name in (
    "id", "resident_phone", "resident_phone_enc", "resident_phone_index", "resident_phone_masked")))


def _run(statements):
    for statement in statements.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def _sealed(secret, raw):
    """The three new columns for a stored plaintext value."""
    value = raw.strip()
    if "*" in value:  # already masked at the source: nothing more to hide, nothing to find it by
        return {"enc": None, "idx": None, "masked": value[:32]}
    try:
        digits = phones.normalize(value)
    except ValueError:
        return {"enc": phones.seal(secret, value), "idx": None, "masked": "****"}
    return {"enc": phones.seal(secret, digits), "idx": phones.blind_index(secret, digits), "masked": phones.mask(digits)}


def _batches(bind, column):
    last_id = 0
    while True:
        rows = bind.execute(sa.select(events.c.id, column).where(events.c.id > last_id, column.is_not(None))
                            .order_by(events.c.id).limit(BATCH)).all()
        if not rows:
            return
        yield rows
        last_id = rows[-1][0]


def _seal_existing():
    bind = op.get_bind()
    secret = str(current_app.config["SECRET_KEY"])
    update = (sa.update(events).where(events.c.id == sa.bindparam("row_id"))
              .values(resident_phone_enc=sa.bindparam("enc"), resident_phone_index=sa.bindparam("idx"),
                      resident_phone_masked=sa.bindparam("masked")))
    for rows in _batches(bind, events.c.resident_phone):
        params = [{"row_id": row_id} | _sealed(secret, raw) for row_id, raw in rows if raw.strip()]
        if params:
            bind.execute(update, params)


def _open_existing():
    bind = op.get_bind()
    keys = [str(current_app.config["SECRET_KEY"]), *(str(k) for k in current_app.config.get("SECRET_KEY_FALLBACKS") or [])]
    update = sa.update(events).where(events.c.id == sa.bindparam("row_id")).values(resident_phone=sa.bindparam("phone"))
    for rows in _batches(bind, events.c.resident_phone_enc):
        bind.execute(update, [{"row_id": row_id, "phone": phones.unseal(keys, token)[:32]} for row_id, token in rows])
    bind.execute(sa.update(events).where(events.c.resident_phone.is_(None), events.c.resident_phone_masked.is_not(None))
                 .values(resident_phone=events.c.resident_phone_masked))


def upgrade():
    op.create_table('pii_access_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.Column('actor_role', sa.String(length=16), nullable=False),
    sa.Column('actor_unit_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('phone_masked', sa.String(length=32), nullable=True),
    sa.Column('matches', sa.Integer(), nullable=True),
    sa.CheckConstraint("action IN ('reveal', 'search')", name=op.f('ck_pii_access_log_action')),
    sa.CheckConstraint("outcome IN ('granted', 'forbidden', 'not_found')", name=op.f('ck_pii_access_log_outcome')),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_pii_access_log_actor_id_users')),
    sa.ForeignKeyConstraint(['actor_unit_id'], ['units.id'], name=op.f('fk_pii_access_log_actor_unit_id_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pii_access_log'))
    )
    with op.batch_alter_table('pii_access_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pii_access_log_actor_id'), ['actor_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_pii_access_log_event_id'), ['event_id'], unique=False)
    _run(APPEND_ONLY_SQL)

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resident_phone_enc', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('resident_phone_index', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('resident_phone_masked', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_events_resident_phone_index'), ['resident_phone_index'], unique=False)
    _seal_existing()
    # A plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35 too): copying `events` in batch mode would
    # have to drop a table other tables' rows refer to.
    op.drop_column('events', 'resident_phone')


def downgrade():
    op.add_column('events', sa.Column('resident_phone', sa.String(length=32), nullable=True))
    _open_existing()
    op.drop_index(op.f('ix_events_resident_phone_index'), table_name='events')
    for column in ('resident_phone_masked', 'resident_phone_index', 'resident_phone_enc'):
        op.drop_column('events', column)

    _run(DROP_SQL)
    with op.batch_alter_table('pii_access_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pii_access_log_event_id'))
        batch_op.drop_index(batch_op.f('ix_pii_access_log_actor_id'))
    op.drop_table('pii_access_log')
