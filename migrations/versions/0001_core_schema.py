"""core schema: territory, users, tokens, categories, events, audit trail, photos

Revision ID: 0001
Revises: 
Create Date: 2026-11-28 03:39:54.994977

"""
import sqlalchemy as sa
from alembic import op

import grid_service.infra.timeutil

# revision identifiers, used by Alembic.
revision = '0001'
down_revision = None
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
        "CREATE OR REPLACE FUNCTION event_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'event_history is append-only'; END $$",
        "CREATE TRIGGER event_history_append_only BEFORE UPDATE OR DELETE ON event_history "
        "FOR EACH ROW EXECUTE FUNCTION event_history_append_only()",
    ],
}


def upgrade():
    op.create_table('categories',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('level', sa.String(length=8), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('keywords', sa.String(length=200), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('sort_order', sa.Integer(), nullable=False),
    sa.CheckConstraint("(level = 'major') = (parent_id IS NULL)", name=op.f('ck_categories_level')),
    sa.ForeignKeyConstraint(['parent_id'], ['categories.id'], name=op.f('fk_categories_parent_id_categories')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_categories')),
    sa.UniqueConstraint('code', name=op.f('uq_categories_code'))
    )
    with op.batch_alter_table('categories', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_categories_parent_id'), ['parent_id'], unique=False)

    op.create_table('service_state',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=256), nullable=False),
    sa.Column('updated_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_service_state'))
    )
    op.create_table('units',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('path', sa.String(length=512).with_variant(sa.String(length=512, collation='C'), 'postgresql'), nullable=False),
    sa.Column('region', sa.String(length=32), nullable=True),
    sa.Column('boundary', sa.JSON(), nullable=True),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("(level = 'district') = (parent_id IS NULL)", name=op.f('ck_units_parent_by_level')),
    sa.CheckConstraint("level IN ('district', 'street', 'community', 'grid')", name=op.f('ck_units_level')),
    sa.ForeignKeyConstraint(['parent_id'], ['units.id'], name=op.f('fk_units_parent_id_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_units')),
    sa.UniqueConstraint('code', name=op.f('uq_units_code'))
    )
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_units_parent_id'), ['parent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_units_path'), ['path'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("role IN ('grid_worker', 'supervisor', 'handler', 'admin')", name=op.f('ck_users_role')),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_users_unit_id_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_users_unit_id'), ['unit_id'], unique=False)

    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=True),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=False),
    sa.Column('priority', sa.String(length=8), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('located_unit_id', sa.Integer(), nullable=False),
    sa.Column('grid_id', sa.Integer(), nullable=True),
    sa.Column('handler_id', sa.Integer(), nullable=True),
    sa.Column('reporter_id', sa.Integer(), nullable=True),
    sa.Column('merged_into_id', sa.Integer(), nullable=True),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('address', sa.String(length=300), nullable=False),
    sa.Column('lat', sa.Float(), nullable=True),
    sa.Column('lon', sa.Float(), nullable=True),
    sa.Column('resident_name', sa.String(length=64), nullable=True),
    sa.Column('resident_phone', sa.String(length=32), nullable=True),
    sa.Column('needs_triage', sa.Boolean(), nullable=False),
    sa.Column('triage_reason', sa.String(length=200), nullable=True),
    sa.Column('return_count', sa.Integer(), nullable=False),
    sa.Column('rework_count', sa.Integer(), nullable=False),
    sa.Column('reopen_count', sa.Integer(), nullable=False),
    sa.Column('received_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("level IN ('district', 'street', 'community', 'grid')", name=op.f('ck_events_level')),
    sa.CheckConstraint("priority IN ('urgent', 'normal')", name=op.f('ck_events_priority')),
    sa.CheckConstraint("source IN ('grid_worker', 'hotline', 'open311', 'supervisor')", name=op.f('ck_events_source')),
    sa.CheckConstraint("state IN ('reported', 'registered', 'dispatched', 'in_progress', 'resolved', 'suspended', 'closed', 'rejected', 'merged', 'cancelled')", name=op.f('ck_events_state')),
    sa.CheckConstraint('return_count >= 0 AND rework_count >= 0 AND reopen_count >= 0', name=op.f('ck_events_counts')),
    sa.ForeignKeyConstraint(['category_id'], ['categories.id'], name=op.f('fk_events_category_id_categories')),
    sa.ForeignKeyConstraint(['grid_id'], ['units.id'], name=op.f('fk_events_grid_id_units')),
    sa.ForeignKeyConstraint(['handler_id'], ['users.id'], name=op.f('fk_events_handler_id_users')),
    sa.ForeignKeyConstraint(['located_unit_id'], ['units.id'], name=op.f('fk_events_located_unit_id_units')),
    sa.ForeignKeyConstraint(['merged_into_id'], ['events.id'], name=op.f('fk_events_merged_into_id_events')),
    sa.ForeignKeyConstraint(['owner_id'], ['units.id'], name=op.f('fk_events_owner_id_units')),
    sa.ForeignKeyConstraint(['reporter_id'], ['users.id'], name=op.f('fk_events_reporter_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_category_id'), ['category_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_grid_id'), ['grid_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_handler_id'), ['handler_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_located_unit_id'), ['located_unit_id'], unique=False)
        batch_op.create_index('ix_events_owner_state', ['owner_id', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_received_at'), ['received_at'], unique=False)
        batch_op.create_index('ix_events_state_received', ['state', 'received_at'], unique=False)

    op.create_table('attachments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('content_type', sa.String(length=32), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('uploaded_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('before', 'after')", name=op.f('ck_attachments_kind')),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_attachments_event_id_events')),
    sa.ForeignKeyConstraint(['uploaded_by_id'], ['users.id'], name=op.f('fk_attachments_uploaded_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attachments')),
    sa.UniqueConstraint('event_id', 'sha256', 'kind', name=op.f('uq_attachments_event_id_sha256_kind'))
    )
    with op.batch_alter_table('attachments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_attachments_event_id'), ['event_id'], unique=False)

    op.create_table('event_history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('actor_role', sa.String(length=16), nullable=False),
    sa.Column('actor_unit_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=24), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('from_level', sa.String(length=16), nullable=True),
    sa.Column('to_level', sa.String(length=16), nullable=False),
    sa.Column('from_owner_id', sa.Integer(), nullable=True),
    sa.Column('to_owner_id', sa.Integer(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_event_history_actor_id_users')),
    sa.ForeignKeyConstraint(['actor_unit_id'], ['units.id'], name=op.f('fk_event_history_actor_unit_id_units')),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_event_history_event_id_events')),
    sa.ForeignKeyConstraint(['from_owner_id'], ['units.id'], name=op.f('fk_event_history_from_owner_id_units')),
    sa.ForeignKeyConstraint(['to_owner_id'], ['units.id'], name=op.f('fk_event_history_to_owner_id_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event_history'))
    )
    with op.batch_alter_table('event_history', schema=None) as batch_op:
        batch_op.create_index('ix_event_history_event_id_id', ['event_id', 'id'], unique=False)

    # The audit trail is append-only in the database itself.
    for statement in APPEND_ONLY_SQL.get(op.get_bind().dialect.name, []):
        op.execute(statement)



def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS event_history_append_only ON event_history")
        op.execute("DROP FUNCTION IF EXISTS event_history_append_only()")
    with op.batch_alter_table('event_history', schema=None) as batch_op:
        batch_op.drop_index('ix_event_history_event_id_id')

    op.drop_table('event_history')
    with op.batch_alter_table('attachments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_attachments_event_id'))

    op.drop_table('attachments')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_state_received')
        batch_op.drop_index(batch_op.f('ix_events_received_at'))
        batch_op.drop_index('ix_events_owner_state')
        batch_op.drop_index(batch_op.f('ix_events_located_unit_id'))
        batch_op.drop_index(batch_op.f('ix_events_handler_id'))
        batch_op.drop_index(batch_op.f('ix_events_grid_id'))
        batch_op.drop_index(batch_op.f('ix_events_category_id'))

    op.drop_table('events')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))

    op.drop_table('api_tokens')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_users_unit_id'))

    op.drop_table('users')
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_units_path'))
        batch_op.drop_index(batch_op.f('ix_units_parent_id'))

    op.drop_table('units')
    op.drop_table('service_state')
    with op.batch_alter_table('categories', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_categories_parent_id'))

    op.drop_table('categories')
