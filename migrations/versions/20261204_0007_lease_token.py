"""Leases bound to their holder: the worker token that leased a job

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_token_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            'fk_jobs_lease_token_id_api_tokens', 'api_tokens', ['lease_token_id'], ['id'],
            ondelete='SET NULL',
        )


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_jobs_lease_token_id_api_tokens', type_='foreignkey')
        batch_op.drop_column('lease_token_id')
