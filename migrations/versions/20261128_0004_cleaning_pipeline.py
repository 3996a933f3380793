"""cleaning pipeline: per-dataset pipelines, their rounds and round jobs, each sample's and
class's current state, and the append-only events behind them

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 01:05:53.372634
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('pipelines',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.Enum('junk', 'label', 'class', 'final', 'done', name='stage', native_enum=False, length=16), nullable=False),
    sa.Column('auto', sa.Boolean(), nullable=False),
    sa.Column('config', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('decisions_seen_id', sa.BigInteger(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_pipelines_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_pipelines_dataset_id_datasets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pipelines')),
    sa.UniqueConstraint('dataset_id', name=op.f('uq_pipelines_dataset_id'))
    )
    op.create_table('pipeline_rounds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pipeline_id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('junk_seed', 'junk_iteration', 'flag_audit', 'bulk_accept', 'junk_audit', 'cross_validation', 'pull_back', 'human_sample', 'class_review', 'final_training', name='roundkind', native_enum=False, length=32), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('stage', sa.Enum('junk', 'label', 'class', 'final', 'done', name='stage', native_enum=False, length=16), nullable=False),
    sa.Column('state', sa.Enum('running', 'reviewing', 'done', 'failed', 'cancelled', name='roundstate', native_enum=False, length=16), nullable=False),
    sa.Column('phase', sa.String(length=32), nullable=False),
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('request_key', sa.String(length=64), nullable=True),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('stats', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_pipeline_rounds_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_pipeline_rounds_dataset_id_datasets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['pipeline_id'], ['pipelines.id'], name=op.f('fk_pipeline_rounds_pipeline_id_pipelines'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pipeline_rounds')),
    sa.UniqueConstraint('pipeline_id', 'kind', 'number', name=op.f('uq_pipeline_rounds_pipeline_id_kind_number')),
    sa.UniqueConstraint('pipeline_id', 'request_key', name=op.f('uq_pipeline_rounds_pipeline_id_request_key'))
    )
    with op.batch_alter_table('pipeline_rounds', schema=None) as batch_op:
        batch_op.create_index('ix_pipeline_rounds_pipeline_id_state', ['pipeline_id', 'state'], unique=False)

    op.create_table('pipeline_classes',
    sa.Column('class_id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.Enum('active', 'review', 'kept', 'dropped', name='classstate', native_enum=False, length=16), nullable=False),
    sa.Column('decision_id', sa.BigInteger(), nullable=True),
    sa.Column('round_id', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['class_id'], ['classes.id'], name=op.f('fk_pipeline_classes_class_id_classes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_pipeline_classes_dataset_id_datasets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['round_id'], ['pipeline_rounds.id'], name=op.f('fk_pipeline_classes_round_id_pipeline_rounds'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('class_id', name=op.f('pk_pipeline_classes'))
    )
    with op.batch_alter_table('pipeline_classes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pipeline_classes_dataset_id'), ['dataset_id'], unique=False)

    op.create_table('pipeline_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=True),
    sa.Column('sample_id', sa.BigInteger(), nullable=True),
    sa.Column('class_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.Enum('queued', 'kept', 'rejected', 'pulled_back', 'bulk_junk', 'verdict', 'withdrawn', 'class_dropped', 'class_kept', 'duplicate', name='eventkind', native_enum=False, length=16), nullable=False),
    sa.Column('from_status', sa.Enum('candidate', 'junk', 'kept', 'rejected', 'pulled_back', 'confirmed', 'relabelled', 'dropped', 'duplicate', name='samplestatus', native_enum=False, length=16), nullable=True),
    sa.Column('to_status', sa.Enum('candidate', 'junk', 'kept', 'rejected', 'pulled_back', 'confirmed', 'relabelled', 'dropped', 'duplicate', name='samplestatus', native_enum=False, length=16), nullable=True),
    sa.Column('score', sa.REAL(), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('decision_id', sa.BigInteger(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_pipeline_events_dataset_id_datasets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['round_id'], ['pipeline_rounds.id'], name=op.f('fk_pipeline_events_round_id_pipeline_rounds'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pipeline_events'))
    )
    with op.batch_alter_table('pipeline_events', schema=None) as batch_op:
        batch_op.create_index('ix_pipeline_events_dataset_id_kind', ['dataset_id', 'kind'], unique=False)
        batch_op.create_index('ix_pipeline_events_round_id_kind', ['round_id', 'kind'], unique=False)
        batch_op.create_index('ix_pipeline_events_sample_id', ['sample_id'], unique=False)

    op.create_table('pipeline_round_jobs',
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_pipeline_round_jobs_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['round_id'], ['pipeline_rounds.id'], name=op.f('fk_pipeline_round_jobs_round_id_pipeline_rounds'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('round_id', 'job_id', name=op.f('pk_pipeline_round_jobs'))
    )
    with op.batch_alter_table('pipeline_round_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pipeline_round_jobs_job_id'), ['job_id'], unique=False)

    op.create_table('pipeline_samples',
    sa.Column('sample_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('candidate', 'junk', 'kept', 'rejected', 'pulled_back', 'confirmed', 'relabelled', 'dropped', 'duplicate', name='samplestatus', native_enum=False, length=16), nullable=False),
    sa.Column('model_status', sa.Enum('candidate', 'junk', 'kept', 'rejected', 'pulled_back', 'confirmed', 'relabelled', 'dropped', 'duplicate', name='samplestatus', native_enum=False, length=16), nullable=False),
    sa.Column('given_class_id', sa.Integer(), nullable=False),
    sa.Column('label_class_id', sa.Integer(), nullable=False),
    sa.Column('human_verdict', sa.Enum('junk', 'not_junk', 'accept', 'relabel', 'unsure', 'keep', 'drop', 'undo', name='verdict', native_enum=False, length=16), nullable=True),
    sa.Column('decision_id', sa.BigInteger(), nullable=True),
    sa.Column('junk_score', sa.REAL(), nullable=True),
    sa.Column('label_rank', sa.SmallInteger(), nullable=True),
    sa.Column('pred_job_id', sa.Integer(), nullable=True),
    sa.Column('cl_issue', sa.Boolean(), nullable=True),
    sa.Column('cl_quality', sa.REAL(), nullable=True),
    sa.Column('round_id', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_pipeline_samples_dataset_id_datasets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['given_class_id'], ['classes.id'], name=op.f('fk_pipeline_samples_given_class_id_classes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['label_class_id'], ['classes.id'], name=op.f('fk_pipeline_samples_label_class_id_classes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['pred_job_id'], ['jobs.id'], name=op.f('fk_pipeline_samples_pred_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['round_id'], ['pipeline_rounds.id'], name=op.f('fk_pipeline_samples_round_id_pipeline_rounds'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_pipeline_samples_sample_id_samples'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sample_id', name=op.f('pk_pipeline_samples'))
    )
    with op.batch_alter_table('pipeline_samples', schema=None) as batch_op:
        batch_op.create_index('ix_pipeline_samples_dataset_id_label_class_id', ['dataset_id', 'label_class_id'], unique=False)
        batch_op.create_index('ix_pipeline_samples_dataset_id_status', ['dataset_id', 'status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('pipeline_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_pipeline_samples_dataset_id_status')
        batch_op.drop_index('ix_pipeline_samples_dataset_id_label_class_id')

    op.drop_table('pipeline_samples')
    with op.batch_alter_table('pipeline_round_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pipeline_round_jobs_job_id'))

    op.drop_table('pipeline_round_jobs')
    with op.batch_alter_table('pipeline_events', schema=None) as batch_op:
        batch_op.drop_index('ix_pipeline_events_sample_id')
        batch_op.drop_index('ix_pipeline_events_round_id_kind')
        batch_op.drop_index('ix_pipeline_events_dataset_id_kind')

    op.drop_table('pipeline_events')
    with op.batch_alter_table('pipeline_classes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pipeline_classes_dataset_id'))

    op.drop_table('pipeline_classes')
    with op.batch_alter_table('pipeline_rounds', schema=None) as batch_op:
        batch_op.drop_index('ix_pipeline_rounds_pipeline_id_state')

    op.drop_table('pipeline_rounds')
    op.drop_table('pipelines')
