"""review queue: review_tasks (leased by annotators) and review_decisions (append-only)

The queue is read through partial indexes on pending and on leased tasks; decisions are unique
per (user, idempotency key), and an undo supersedes at most one decision.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 00:47:40.997175
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('review_tasks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('junk_check', 'junk_audit', 'label_check', 'class_check', name='taskkind', native_enum=False, length=16), nullable=False),
    sa.Column('sample_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('class_id', sa.Integer(), nullable=True),
    sa.Column('priority', sa.Float(), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('suggestions', sa.JSON(), nullable=True),
    sa.Column('state', sa.Enum('pending', 'leased', 'done', 'cancelled', name='taskstate', native_enum=False, length=16), nullable=False),
    sa.Column('lease_owner_id', sa.Integer(), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_version', sa.Integer(), nullable=False),
    sa.Column('origin_task_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('exclude_user_id', sa.Integer(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('(sample_id IS NULL) <> (class_id IS NULL)', name=op.f('ck_review_tasks_one_subject')),
    sa.ForeignKeyConstraint(['class_id'], ['classes.id'], name=op.f('fk_review_tasks_class_id_classes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_review_tasks_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_review_tasks_dataset_id_datasets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['exclude_user_id'], ['users.id'], name=op.f('fk_review_tasks_exclude_user_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['lease_owner_id'], ['users.id'], name=op.f('fk_review_tasks_lease_owner_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['origin_task_id'], ['review_tasks.id'], name=op.f('fk_review_tasks_origin_task_id_review_tasks'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_review_tasks_sample_id_samples'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_tasks'))
    )
    with op.batch_alter_table('review_tasks', schema=None) as batch_op:
        batch_op.create_index('ix_review_tasks_class_id', ['class_id'], unique=False, postgresql_where=sa.text('class_id IS NOT NULL'), sqlite_where=sa.text('class_id IS NOT NULL'))
        batch_op.create_index('ix_review_tasks_leased', ['dataset_id', 'kind', 'priority', 'id'], unique=False, postgresql_where=sa.text("state = 'leased'"), sqlite_where=sa.text("state = 'leased'"))
        batch_op.create_index('ix_review_tasks_leased_owner', ['lease_owner_id', 'kind'], unique=False, postgresql_where=sa.text("state = 'leased'"), sqlite_where=sa.text("state = 'leased'"))
        batch_op.create_index('ix_review_tasks_pending', ['dataset_id', 'kind', 'priority', 'id'], unique=False, postgresql_where=sa.text("state = 'pending'"), sqlite_where=sa.text("state = 'pending'"))
        batch_op.create_index('ix_review_tasks_pending_kind', ['kind', 'priority', 'id'], unique=False, postgresql_where=sa.text("state = 'pending'"), sqlite_where=sa.text("state = 'pending'"))
        batch_op.create_index(batch_op.f('ix_review_tasks_sample_id'), ['sample_id'], unique=False)
        batch_op.create_index('uq_review_tasks_class_subject', ['kind', 'class_id', 'source'], unique=True, postgresql_where=sa.text('class_id IS NOT NULL AND origin_task_id IS NULL'), sqlite_where=sa.text('class_id IS NOT NULL AND origin_task_id IS NULL'))
        batch_op.create_index('uq_review_tasks_origin_task_id', ['origin_task_id'], unique=True, postgresql_where=sa.text('origin_task_id IS NOT NULL'), sqlite_where=sa.text('origin_task_id IS NOT NULL'))
        batch_op.create_index('uq_review_tasks_sample_subject', ['kind', 'sample_id', 'source'], unique=True, postgresql_where=sa.text('sample_id IS NOT NULL AND origin_task_id IS NULL'), sqlite_where=sa.text('sample_id IS NOT NULL AND origin_task_id IS NULL'))

    op.create_table('review_decisions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('task_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('junk_check', 'junk_audit', 'label_check', 'class_check', name='taskkind', native_enum=False, length=16), nullable=False),
    sa.Column('sample_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('class_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('verdict', sa.Enum('junk', 'not_junk', 'accept', 'relabel', 'unsure', 'keep', 'drop', 'undo', name='verdict', native_enum=False, length=16), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('lease_version', sa.Integer(), nullable=False),
    sa.Column('supersedes_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['supersedes_id'], ['review_decisions.id'], name=op.f('fk_review_decisions_supersedes_id_review_decisions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['review_tasks.id'], name=op.f('fk_review_decisions_task_id_review_tasks'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_review_decisions_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_decisions')),
    sa.UniqueConstraint('user_id', 'idempotency_key', name=op.f('uq_review_decisions_user_id_idempotency_key'))
    )
    with op.batch_alter_table('review_decisions', schema=None) as batch_op:
        batch_op.create_index('ix_review_decisions_confirmed_class', ['class_id'], unique=False, postgresql_where=sa.text("kind = 'label_check' AND verdict IN ('accept', 'relabel')"), sqlite_where=sa.text("kind = 'label_check' AND verdict IN ('accept', 'relabel')"))
        batch_op.create_index('ix_review_decisions_dataset_id_created_at', ['dataset_id', 'created_at'], unique=False)
        batch_op.create_index('ix_review_decisions_sample_id', ['sample_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_decisions_task_id'), ['task_id'], unique=False)
        batch_op.create_index('ix_review_decisions_user_id_created_at', ['user_id', 'created_at'], unique=False)
        batch_op.create_index('uq_review_decisions_supersedes_id', ['supersedes_id'], unique=True, postgresql_where=sa.text('supersedes_id IS NOT NULL'), sqlite_where=sa.text('supersedes_id IS NOT NULL'))


def downgrade() -> None:
    # Dropping a table drops its indexes.
    op.drop_table('review_decisions')
    op.drop_table('review_tasks')
