"""api clients, hotline, outbox, open311, login and rate limits

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 05:57:04.990431

"""
import sqlalchemy as sa
from alembic import op

import grid_service.infra.timeutil

# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('rate_counters',
    sa.Column('key', sa.String(length=160), nullable=False),
    sa.Column('window_start', sa.BigInteger(), nullable=False),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_rate_counters'))
    )
    with op.batch_alter_table('rate_counters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rate_counters_window_start'), ['window_start'], unique=False)

    op.create_table('api_clients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=True),
    sa.Column('callback_url', sa.String(length=500), nullable=True),
    sa.Column('api_key_hash', sa.String(length=64), nullable=True),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('hotline', 'open311')", name=op.f('ck_api_clients_kind')),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_api_clients_unit_id_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_clients')),
    sa.UniqueConstraint('api_key_hash', name=op.f('uq_api_clients_api_key_hash')),
    sa.UniqueConstraint('name', name=op.f('uq_api_clients_name'))
    )
    op.create_table('hotline_category_map',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('external_code', sa.String(length=32), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=False),
    sa.Column('updated_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['category_id'], ['categories.id'], name=op.f('fk_hotline_category_map_category_id_categories')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hotline_category_map')),
    sa.UniqueConstraint('external_code', name=op.f('uq_hotline_category_map_external_code'))
    )
    op.create_table('open311_attributes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('datatype', sa.String(length=16), nullable=False),
    sa.Column('variable', sa.Boolean(), nullable=False),
    sa.Column('required', sa.Boolean(), nullable=False),
    sa.Column('sort_order', sa.Integer(), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=False),
    sa.Column('datatype_description', sa.String(length=200), nullable=False),
    sa.Column('choices', sa.JSON(), nullable=False),
    sa.Column('updated_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("datatype IN ('string', 'number', 'datetime', 'text', 'singlevaluelist', 'multivaluelist')", name=op.f('ck_open311_attributes_datatype')),
    sa.CheckConstraint('sort_order > 0', name=op.f('ck_open311_attributes_sort_order')),
    sa.CheckConstraint('variable OR NOT required', name=op.f('ck_open311_attributes_required_variable')),
    sa.ForeignKeyConstraint(['category_id'], ['categories.id'], name=op.f('fk_open311_attributes_category_id_categories')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_open311_attributes')),
    sa.UniqueConstraint('category_id', 'code', name=op.f('uq_open311_attributes_category_id_code')),
    sa.UniqueConstraint('category_id', 'sort_order', name=op.f('uq_open311_attributes_category_id_sort_order'))
    )
    with op.batch_alter_table('open311_attributes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_open311_attributes_category_id'), ['category_id'], unique=False)

    op.create_table('api_client_secrets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.Integer(), nullable=False),
    sa.Column('ciphertext', sa.String(length=200), nullable=False),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_api_client_secrets_client_id_api_clients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_client_secrets'))
    )
    with op.batch_alter_table('api_client_secrets', schema=None) as batch_op:
        batch_op.create_index('ix_api_client_secrets_client_id_expires_at', ['client_id', 'expires_at'], unique=False)

    op.create_table('hotline_seen_webhooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.Integer(), nullable=False),
    sa.Column('webhook_id', sa.String(length=255), nullable=False),
    sa.Column('signed_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('seen_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_hotline_seen_webhooks_client_id_api_clients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hotline_seen_webhooks')),
    sa.UniqueConstraint('client_id', 'webhook_id', 'signed_at', name=op.f('uq_hotline_seen_webhooks_client_id_webhook_id_signed_at'))
    )
    with op.batch_alter_table('hotline_seen_webhooks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hotline_seen_webhooks_signed_at'), ['signed_at'], unique=False)

    op.create_table('hotline_petitions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.Integer(), nullable=False),
    sa.Column('petition_number', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('external_category', sa.String(length=32), nullable=False),
    sa.Column('is_category_mapped', sa.Boolean(), nullable=False),
    sa.Column('webhook_id', sa.String(length=255), nullable=False),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("channel IN ('phone', 'web', 'app', 'wechat')", name=op.f('ck_hotline_petitions_channel')),
    sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_hotline_petitions_client_id_api_clients')),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_hotline_petitions_event_id_events')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hotline_petitions')),
    sa.UniqueConstraint('client_id', 'petition_number', name=op.f('uq_hotline_petitions_client_id_petition_number')),
    sa.UniqueConstraint('event_id', name=op.f('uq_hotline_petitions_event_id'))
    )
    op.create_table('open311_requests',
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.Integer(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('address_id', sa.String(length=64), nullable=True),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('device_id', sa.String(length=100), nullable=True),
    sa.Column('account_id', sa.String(length=100), nullable=True),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('media_url', sa.String(length=1000), nullable=True),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_open311_requests_client_id_api_clients')),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_open311_requests_event_id_events')),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_open311_requests')),
    sa.UniqueConstraint('token', name=op.f('uq_open311_requests_token'))
    )
    with op.batch_alter_table('open311_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_open311_requests_client_id'), ['client_id'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('msg_id', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('claimed_until', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=300), nullable=True),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_attempt_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('registered', 'dispatched', 'escalated', 'returned', 'resolved', 'closed', 'rejected', 'reopened', 'merged', 'cancelled')", name=op.f('ck_outbox_kind')),
    sa.CheckConstraint("state IN ('pending', 'delivered', 'dead')", name=op.f('ck_outbox_state')),
    sa.CheckConstraint('seq >= 1 AND attempts >= 0', name=op.f('ck_outbox_counts')),
    sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_outbox_client_id_api_clients')),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_outbox_event_id_events')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('event_id', 'seq', name=op.f('uq_outbox_event_id_seq')),
    sa.UniqueConstraint('msg_id', name=op.f('uq_outbox_msg_id'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_client_id'), ['client_id'], unique=False)
        batch_op.create_index('ix_outbox_state_next_attempt_at', ['state', 'next_attempt_at'], unique=False)

    op.create_table('hotline_feedback',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('petition_id', sa.Integer(), nullable=False),
    sa.Column('verdict', sa.String(length=8), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('visited_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reopened', sa.Boolean(), nullable=False),
    sa.Column('event_state', sa.String(length=16), nullable=False),
    sa.Column('webhook_id', sa.String(length=255), nullable=False),
    sa.Column('created_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("verdict IN ('满意', '基本满意', '不满意')", name=op.f('ck_hotline_feedback_verdict')),
    sa.ForeignKeyConstraint(['petition_id'], ['hotline_petitions.id'], name=op.f('fk_hotline_feedback_petition_id_hotline_petitions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hotline_feedback')),
    sa.UniqueConstraint('petition_id', 'webhook_id', name=op.f('uq_hotline_feedback_petition_id_webhook_id'))
    )
    with op.batch_alter_table('hotline_feedback', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hotline_feedback_petition_id'), ['petition_id'], unique=False)

    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=8), server_default='cli', nullable=False))
        batch_op.add_column(sa.Column('family', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('family_expires_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_api_tokens_family'), ['family'], unique=False)
        batch_op.create_check_constraint('kind', "kind IN ('access', 'refresh', 'cli', 'enrol')")

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('password_hash', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('password_changed_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('failed_logins', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch_op.add_column(sa.Column('locked_until', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('totp_secret', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('totp_confirmed_at', grid_service.infra.timeutil.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('totp_last_step', sa.BigInteger(), nullable=True))



def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('totp_last_step')
        batch_op.drop_column('totp_confirmed_at')
        batch_op.drop_column('totp_secret')
        batch_op.drop_column('locked_until')
        batch_op.drop_column('failed_logins')
        batch_op.drop_column('password_changed_at')
        batch_op.drop_column('password_hash')

    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_api_tokens_kind'), type_='check')
        batch_op.drop_index(batch_op.f('ix_api_tokens_family'))
        batch_op.drop_column('family_expires_at')
        batch_op.drop_column('family')
        batch_op.drop_column('kind')

    with op.batch_alter_table('hotline_feedback', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hotline_feedback_petition_id'))

    op.drop_table('hotline_feedback')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_state_next_attempt_at')
        batch_op.drop_index(batch_op.f('ix_outbox_client_id'))

    op.drop_table('outbox')
    with op.batch_alter_table('open311_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_open311_requests_client_id'))

    op.drop_table('open311_requests')
    op.drop_table('hotline_petitions')
    with op.batch_alter_table('hotline_seen_webhooks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hotline_seen_webhooks_signed_at'))

    op.drop_table('hotline_seen_webhooks')
    with op.batch_alter_table('api_client_secrets', schema=None) as batch_op:
        batch_op.drop_index('ix_api_client_secrets_client_id_expires_at')

    op.drop_table('api_client_secrets')
    with op.batch_alter_table('open311_attributes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_open311_attributes_category_id'))

    op.drop_table('open311_attributes')
    op.drop_table('hotline_category_map')
    op.drop_table('api_clients')
    with op.batch_alter_table('rate_counters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rate_counters_window_start'))

    op.drop_table('rate_counters')
