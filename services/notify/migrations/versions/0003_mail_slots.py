"""mails: a slot per order for the outcome mail and one for the cancellation

An order gets one outcome mail (its confirmation or its failure notice: the primary key keeps
them exclusive) and, if it is cancelled, one cancellation mail.

Revision ID: 5c1d2e7a9b30
Revises: fb52deccffbf
Create Date: 2026-12-03 10:05:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '5c1d2e7a9b30'
down_revision: Union[str, Sequence[str], None] = 'fb52deccffbf'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


COLUMNS = "order_id, kind, status, recipient, subject, message_id, sent_at"


def _mails(name: str, *key: str) -> None:
    op.create_table(
        name,
        sa.Column('order_id', sa.String(length=64), nullable=False),
        sa.Column('slot', sa.String(length=16), server_default='outcome', nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('status', sa.String(length=16), server_default='sent', nullable=False),
        sa.Column('recipient', sa.String(length=320), nullable=False),
        sa.Column('subject', sa.String(length=255), nullable=False),
        sa.Column('message_id', sa.String(length=255), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(*key, name=f'{name}_pkey'))


# A new table copied into, on SQLite and PostgreSQL alike: SQLite cannot change a primary key
# in place, and the old one has no name to drop by on SQLite.
def upgrade() -> None:
    _mails('mails_new', 'order_id', 'slot')
    op.execute(f"INSERT INTO mails_new ({COLUMNS}, slot) SELECT {COLUMNS}, 'outcome' FROM mails")
    op.drop_table('mails')
    op.rename_table('mails_new', 'mails')


def downgrade() -> None:
    _mails('mails_old', 'order_id')
    op.execute(f"INSERT INTO mails_old ({COLUMNS}) SELECT {COLUMNS} FROM mails "
               "WHERE slot = 'outcome'")
    op.drop_table('mails')
    op.rename_table('mails_old', 'mails')
