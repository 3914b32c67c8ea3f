"""drop sla_clocks' own event_id index: UNIQUE (event_id, metric, seq) already leads with event_id

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 08:30:00

Every clock the sweeper or a request writes kept two B-tree entries keyed by its event; one is enough.
"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.drop_index('ix_sla_clocks_event_id', table_name='sla_clocks')


def downgrade():
    op.create_index('ix_sla_clocks_event_id', 'sla_clocks', ['event_id'], unique=False)
