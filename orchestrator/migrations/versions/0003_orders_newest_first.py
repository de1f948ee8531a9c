"""orders: index for listing newest first (GET /orders)

Revision ID: 5c1e2a9b7f30
Revises: 079d98cbe396
Create Date: 2026-12-03 08:55:00.000000

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '5c1e2a9b7f30'
down_revision: Union[str, Sequence[str], None] = '079d98cbe396'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index('orders_newest_first', ['created_at', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('orders_newest_first')
