"""kNN detector: each sample's kNN verdict and neighbour agreement beside confident learning's

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 21:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('pipeline_samples', schema=None) as batch_op:
        batch_op.add_column(sa.Column('knn_issue', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('knn_agreement', sa.REAL(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('pipeline_samples', schema=None) as batch_op:
        batch_op.drop_column('knn_agreement')
        batch_op.drop_column('knn_issue')
