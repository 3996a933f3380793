"""Class votes: a dropped class can be restored (votes until then set aside), and an index
to find who voted on a class

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('pipeline_classes', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('votes_after_id', sa.BigInteger(), server_default='0', nullable=False)
        )
        batch_op.add_column(sa.Column('restored_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('restored_by_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_pipeline_classes_restored_by_id_users'),
            'users',
            ['restored_by_id'],
            ['id'],
            ondelete='SET NULL',
        )
    with op.batch_alter_table('review_decisions', schema=None) as batch_op:
        batch_op.create_index(
            'ix_review_decisions_class_vote',
            ['class_id', 'user_id'],
            unique=False,
            postgresql_where=sa.text("kind = 'class_check'"),
            sqlite_where=sa.text("kind = 'class_check'"),
        )


def downgrade() -> None:
    with op.batch_alter_table('review_decisions', schema=None) as batch_op:
        batch_op.drop_index(
            'ix_review_decisions_class_vote',
            postgresql_where=sa.text("kind = 'class_check'"),
            sqlite_where=sa.text("kind = 'class_check'"),
        )
    with op.batch_alter_table('pipeline_classes', schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f('fk_pipeline_classes_restored_by_id_users'), type_='foreignkey'
        )
        batch_op.drop_column('restored_by_id')
        batch_op.drop_column('restored_at')
        batch_op.drop_column('votes_after_id')
