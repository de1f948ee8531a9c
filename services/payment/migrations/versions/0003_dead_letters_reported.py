"""dead letters: reported to the saga (reported_at)

Revision ID: 7a31c0de5e01
Revises: 43fcf2e291d3
Create Date: 2026-12-03 10:30:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '7a31c0de5e01'
down_revision: Union[str, Sequence[str], None] = '43fcf2e291d3'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reported_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_column('reported_at')
