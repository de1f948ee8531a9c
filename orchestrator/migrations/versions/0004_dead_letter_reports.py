"""dead letters: reported_at, and the reports of every process's dead letters

Revision ID: 7a31c0de5e04
Revises: 5c1e2a9b7f30
Create Date: 2026-12-03 10:30:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '7a31c0de5e04'
down_revision: Union[str, Sequence[str], None] = '5c1e2a9b7f30'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reported_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'dead_letter_reports',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('service', sa.String(length=32), nullable=False),
        sa.Column('dead_letter_id', sa.Integer(), nullable=False),
        sa.Column('task', sa.String(length=128), nullable=False),
        sa.Column('order_id', sa.String(length=64), nullable=True),
        sa.Column('error', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('service', 'dead_letter_id', name='one_report_per_dead_letter'))
    op.create_index('dead_letter_reports_newest_first', 'dead_letter_reports',
                    ['created_at', 'id'])


def downgrade() -> None:
    op.drop_index('dead_letter_reports_newest_first', table_name='dead_letter_reports')
    op.drop_table('dead_letter_reports')
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_column('reported_at')
