"""Dataset access: which users may see which datasets (admins see all)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('dataset_grants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=True),
    sa.Column('granted_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_dataset_grants_dataset_id_datasets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['granted_by_id'], ['users.id'], name=op.f('fk_dataset_grants_granted_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_dataset_grants_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dataset_grants')),
    sa.UniqueConstraint('user_id', 'dataset_id', name=op.f('uq_dataset_grants_user_id_dataset_id'))
    )
    op.create_index(op.f('ix_dataset_grants_dataset_id'), 'dataset_grants', ['dataset_id'], unique=False)
    op.create_index(op.f('ix_dataset_grants_user_id'), 'dataset_grants', ['user_id'], unique=False)
    # Existing users keep seeing what they saw before grants existed: every dataset.
    op.execute(
        "INSERT INTO dataset_grants (user_id, dataset_id, created_at) "
        "SELECT id, NULL, CURRENT_TIMESTAMP FROM users WHERE role != 'admin'"
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_dataset_grants_user_id'), table_name='dataset_grants')
    op.drop_index(op.f('ix_dataset_grants_dataset_id'), table_name='dataset_grants')
    op.drop_table('dataset_grants')
