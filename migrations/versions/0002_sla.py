"""sla: calendars, policies, clocks, escalations, notifications

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 04:02:20.243276

"""
import sqlalchemy as sa
from alembic import op

import grid_service.infra.timeutil

# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('sla_calendars',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('weekly', sa.JSON(), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=True),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('working', 'natural')", name=op.f('ck_sla_calendars_kind')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sla_calendars')),
    sa.UniqueConstraint('name', name=op.f('uq_sla_calendars_name'))
    )
    op.create_table('sla_calendar_days',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('calendar_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=False),
    sa.Column('set_by_id', sa.Integer(), nullable=True),
    sa.Column('set_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('holiday', 'workday')", name=op.f('ck_sla_calendar_days_kind')),
    sa.ForeignKeyConstraint(['calendar_id'], ['sla_calendars.id'], name=op.f('fk_sla_calendar_days_calendar_id_sla_calendars')),
    sa.ForeignKeyConstraint(['set_by_id'], ['users.id'], name=op.f('fk_sla_calendar_days_set_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sla_calendar_days')),
    sa.UniqueConstraint('calendar_id', 'day', name=op.f('uq_sla_calendar_days_calendar_id_day'))
    )
    op.create_table('sla_calendar_years',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('calendar_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('confirmed_by_id', sa.Integer(), nullable=True),
    sa.Column('confirmed_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['calendar_id'], ['sla_calendars.id'], name=op.f('fk_sla_calendar_years_calendar_id_sla_calendars')),
    sa.ForeignKeyConstraint(['confirmed_by_id'], ['users.id'], name=op.f('fk_sla_calendar_years_confirmed_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sla_calendar_years')),
    sa.UniqueConstraint('calendar_id', 'year', name=op.f('uq_sla_calendar_years_calendar_id_year'))
    )
    op.create_table('sla_policies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.String(length=40), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=True),
    sa.Column('priority', sa.String(length=8), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('is_current', sa.Boolean(), nullable=False),
    sa.Column('accept_minutes', sa.Integer(), nullable=False),
    sa.Column('level_minutes', sa.JSON(), nullable=False),
    sa.Column('resolve_minutes', sa.Integer(), nullable=False),
    sa.Column('warn_ratio', sa.Float(), nullable=False),
    sa.Column('calendar_id', sa.Integer(), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("priority IS NULL OR priority IN ('urgent', 'normal')", name=op.f('ck_sla_policies_priority')),
    sa.CheckConstraint('accept_minutes > 0 AND resolve_minutes > 0', name=op.f('ck_sla_policies_limits')),
    sa.CheckConstraint('warn_ratio > 0 AND warn_ratio < 1', name=op.f('ck_sla_policies_warn_ratio')),
    sa.ForeignKeyConstraint(['calendar_id'], ['sla_calendars.id'], name=op.f('fk_sla_policies_calendar_id_sla_calendars')),
    sa.ForeignKeyConstraint(['category_id'], ['categories.id'], name=op.f('fk_sla_policies_category_id_categories')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_sla_policies_created_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sla_policies')),
    sa.UniqueConstraint('scope', 'version', name=op.f('uq_sla_policies_scope_version'))
    )
    with op.batch_alter_table('sla_policies', schema=None) as batch_op:
        batch_op.create_index('uq_sla_policies_current_scope', ['scope'], unique=True, postgresql_where=sa.text('is_current'), sqlite_where=sa.text('is_current'))

    op.create_table('sla_clocks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('metric', sa.String(length=8), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=True),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('policy_id', sa.Integer(), nullable=False),
    sa.Column('calendar_id', sa.Integer(), nullable=False),
    sa.Column('limit_minutes', sa.Integer(), nullable=False),
    sa.Column('extended_minutes', sa.Integer(), nullable=False),
    sa.Column('warn_minutes', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('started_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_minutes', sa.Float(), nullable=False),
    sa.Column('segment_started_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('due_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('warn_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('next_check_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('warned_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('breached_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('stopped_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('provisional', sa.Boolean(), nullable=False),
    sa.CheckConstraint("(state = 'running') = (segment_started_at IS NOT NULL)", name=op.f('ck_sla_clocks_segment')),
    sa.CheckConstraint("level IS NULL OR level IN ('district', 'street', 'community', 'grid')", name=op.f('ck_sla_clocks_level')),
    sa.CheckConstraint("metric IN ('accept', 'level', 'resolve')", name=op.f('ck_sla_clocks_metric')),
    sa.CheckConstraint("state IN ('running', 'paused', 'met', 'breached', 'cancelled')", name=op.f('ck_sla_clocks_state')),
    sa.CheckConstraint('limit_minutes > 0 AND used_minutes >= 0', name=op.f('ck_sla_clocks_minutes')),
    sa.ForeignKeyConstraint(['calendar_id'], ['sla_calendars.id'], name=op.f('fk_sla_clocks_calendar_id_sla_calendars')),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_sla_clocks_event_id_events')),
    sa.ForeignKeyConstraint(['owner_id'], ['units.id'], name=op.f('fk_sla_clocks_owner_id_units')),
    sa.ForeignKeyConstraint(['policy_id'], ['sla_policies.id'], name=op.f('fk_sla_clocks_policy_id_sla_policies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sla_clocks')),
    sa.UniqueConstraint('event_id', 'metric', 'seq', name=op.f('uq_sla_clocks_event_id_metric_seq'))
    )
    with op.batch_alter_table('sla_clocks', schema=None) as batch_op:
        batch_op.create_index('ix_sla_clocks_due', ['next_check_at'], unique=False, postgresql_where=sa.text("state = 'running'"), sqlite_where=sa.text("state = 'running'"))
        batch_op.create_index(batch_op.f('ix_sla_clocks_event_id'), ['event_id'], unique=False)
        batch_op.create_index('uq_sla_clocks_live', ['event_id', 'metric'], unique=True, postgresql_where=sa.text("state IN ('running', 'paused')"), sqlite_where=sa.text("state IN ('running', 'paused')"))

    op.create_table('escalations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('clock_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.String(length=8), nullable=False),
    sa.Column('from_level', sa.String(length=16), nullable=False),
    sa.Column('to_level', sa.String(length=16), nullable=False),
    sa.Column('from_owner_id', sa.Integer(), nullable=False),
    sa.Column('to_owner_id', sa.Integer(), nullable=False),
    sa.Column('due_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('escalated_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('late_minutes', sa.Float(), nullable=False),
    sa.CheckConstraint("reason IN ('timer', 'manual')", name=op.f('ck_escalations_reason')),
    sa.ForeignKeyConstraint(['clock_id'], ['sla_clocks.id'], name=op.f('fk_escalations_clock_id_sla_clocks')),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_escalations_event_id_events')),
    sa.ForeignKeyConstraint(['from_owner_id'], ['units.id'], name=op.f('fk_escalations_from_owner_id_units')),
    sa.ForeignKeyConstraint(['to_owner_id'], ['units.id'], name=op.f('fk_escalations_to_owner_id_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_escalations')),
    sa.UniqueConstraint('clock_id', name=op.f('uq_escalations_clock_id'))
    )
    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_escalations_event_id'), ['event_id'], unique=False)
        batch_op.create_index('ix_escalations_from_owner_at', ['from_owner_id', 'escalated_at'], unique=False)

    op.create_table('notifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dedupe_key', sa.String(length=64), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('clock_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('message', sa.String(length=300), nullable=False),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('read_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('read_by_id', sa.Integer(), nullable=True),
    sa.CheckConstraint("kind IN ('warning', 'escalated', 'breached', 'supervise', 'urge', 'dispatched')", name=op.f('ck_notifications_kind')),
    sa.ForeignKeyConstraint(['clock_id'], ['sla_clocks.id'], name=op.f('fk_notifications_clock_id_sla_clocks')),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_notifications_event_id_events')),
    sa.ForeignKeyConstraint(['read_by_id'], ['users.id'], name=op.f('fk_notifications_read_by_id_users')),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_notifications_unit_id_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_notifications_dedupe_key'))
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notifications_event_id'), ['event_id'], unique=False)
        batch_op.create_index('ix_notifications_unit_id_id', ['unit_id', 'id'], unique=False)

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_supervised', sa.Boolean(), server_default=sa.false(), nullable=False))



def downgrade():
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('is_supervised')

    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_unit_id_id')
        batch_op.drop_index(batch_op.f('ix_notifications_event_id'))

    op.drop_table('notifications')
    with op.batch_alter_table('escalations', schema=None) as batch_op:
        batch_op.drop_index('ix_escalations_from_owner_at')
        batch_op.drop_index(batch_op.f('ix_escalations_event_id'))

    op.drop_table('escalations')
    with op.batch_alter_table('sla_clocks', schema=None) as batch_op:
        batch_op.drop_index('uq_sla_clocks_live', postgresql_where=sa.text("state IN ('running', 'paused')"), sqlite_where=sa.text("state IN ('running', 'paused')"))
        batch_op.drop_index(batch_op.f('ix_sla_clocks_event_id'))
        batch_op.drop_index('ix_sla_clocks_due', postgresql_where=sa.text("state = 'running'"), sqlite_where=sa.text("state = 'running'"))

    op.drop_table('sla_clocks')
    with op.batch_alter_table('sla_policies', schema=None) as batch_op:
        batch_op.drop_index('uq_sla_policies_current_scope', postgresql_where=sa.text('is_current'), sqlite_where=sa.text('is_current'))

    op.drop_table('sla_policies')
    op.drop_table('sla_calendar_years')
    op.drop_table('sla_calendar_days')
    op.drop_table('sla_calendars')
