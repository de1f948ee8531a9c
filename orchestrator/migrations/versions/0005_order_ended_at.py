"""orders: when each reached its (latest) terminal state, for GET /metrics' order durations;
needs_attention indexed for its count; the trace of its POST, for one trace per order

Revision ID: 3d8e51b0a9c2
Revises: 7a31c0de5e04
Create Date: 2026-12-03 14:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '3d8e51b0a9c2'
down_revision: Union[str, Sequence[str], None] = '7a31c0de5e04'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('trace_parent', sa.String(length=64), nullable=True))
    op.create_index('orders_ended', 'orders', ['ended_at'])
    op.create_index('orders_needing_attention', 'orders', ['needs_attention'])


def downgrade() -> None:
    op.drop_index('orders_needing_attention', table_name='orders')
    op.drop_index('orders_ended', table_name='orders')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_column('trace_parent')
        batch_op.drop_column('ended_at')
