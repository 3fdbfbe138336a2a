"""Initial study schema: studies, versions, stimuli, participants, trials, answers, admins.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 03:09:51.111719
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=400), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admins")),
        sa.UniqueConstraint("username", name=op.f("uq_admins_username")),
    )
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("public_key", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint("name", name=op.f("uq_studies_name")),
        sa.UniqueConstraint("public_key", name=op.f("uq_studies_public_key")),
    )
    op.create_table(
        "stimuli",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("image_id", sa.String(length=200), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("media_path", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=True),
        sa.Column("variant", sa.String(length=200), nullable=False),
        sa.Column("prompt_id", sa.String(length=200), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=200), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"], ["stimuli.id"], name=op.f("fk_stimuli_source_id_stimuli")
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_stimuli_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stimuli")),
        sa.UniqueConstraint("study_id", "image_id", "sha256", name=op.f("uq_stimuli_study_id")),
        sa.UniqueConstraint("token", name=op.f("uq_stimuli_token")),
    )
    with op.batch_alter_table("stimuli", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stimuli_study_id"), ["study_id"], unique=False)

    op.create_table(
        "study_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_study_versions_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_versions")),
        sa.UniqueConstraint("study_id", "number", name=op.f("uq_study_versions_study_id")),
    )
    op.create_table(
        "participants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("prolific_study_id", sa.String(length=100), nullable=True),
        sa.Column("prolific_session_id", sa.String(length=100), nullable=True),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=True),
        sa.Column("order_seed", sa.BigInteger(), nullable=False),
        sa.Column("consent_version", sa.String(length=100), nullable=True),
        sa.Column("instructions_version", sa.String(length=100), nullable=True),
        sa.Column("viewport_width", sa.Integer(), nullable=True),
        sa.Column("viewport_height", sa.Integer(), nullable=True),
        sa.Column("user_agent", sa.String(length=400), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("consented_at", sa.DateTime(), nullable=True),
        sa.Column("deadline_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_participants_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["study_versions.id"],
            name=op.f("fk_participants_version_id_study_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_participants")),
        sa.UniqueConstraint("public_id", name=op.f("uq_participants_public_id")),
        sa.UniqueConstraint("study_id", "external_id", name=op.f("uq_participants_study_id")),
    )
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_participants_study_id"), ["study_id"], unique=False)

    op.create_table(
        "version_stimuli",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("stimulus_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["stimulus_id"], ["stimuli.id"], name=op.f("fk_version_stimuli_stimulus_id_stimuli")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["study_versions.id"],
            name=op.f("fk_version_stimuli_version_id_study_versions"),
        ),
        sa.PrimaryKeyConstraint("version_id", "stimulus_id", name=op.f("pk_version_stimuli")),
    )
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("presentation", sa.String(length=16), nullable=False),
        sa.Column("criterion", sa.String(length=100), nullable=False),
        sa.Column("check", sa.String(length=16), nullable=True),
        sa.Column("repeat_of", sa.Integer(), nullable=True),
        sa.Column("expected", sa.String(length=16), nullable=True),
        sa.Column("prompt_id", sa.String(length=200), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("left_id", sa.Integer(), nullable=True),
        sa.Column("right_id", sa.Integer(), nullable=True),
        sa.Column("assigned_at", sa.DateTime(), nullable=True),
        sa.Column("shown_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["left_id"], ["stimuli.id"], name=op.f("fk_trials_left_id_stimuli")
        ),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_trials_participant_id_participants"),
        ),
        sa.ForeignKeyConstraint(
            ["right_id"], ["stimuli.id"], name=op.f("fk_trials_right_id_stimuli")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trials")),
        sa.UniqueConstraint("participant_id", "position", name=op.f("uq_trials_participant_id")),
        sa.UniqueConstraint("public_id", name=op.f("uq_trials_public_id")),
    )
    op.create_table(
        "answers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("choice", sa.String(length=8), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("rt_ms", sa.Float(), nullable=False),
        sa.Column("server_ms", sa.Float(), nullable=True),
        sa.Column("answered_at", sa.DateTime(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participants.id"],
            name=op.f("fk_answers_participant_id_participants"),
        ),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_answers_trial_id_trials")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_answers")),
        sa.UniqueConstraint("trial_id", name=op.f("uq_answers_trial_id")),
    )
    with op.batch_alter_table("answers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_answers_participant_id"), ["participant_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("answers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_answers_participant_id"))

    op.drop_table("answers")
    op.drop_table("trials")
    op.drop_table("version_stimuli")
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_participants_study_id"))

    op.drop_table("participants")
    op.drop_table("study_versions")
    with op.batch_alter_table("stimuli", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stimuli_study_id"))

    op.drop_table("stimuli")
    op.drop_table("studies")
    op.drop_table("admins")
