"""Running tallies of the main trials (tally_pairs, tally_cells), filled from the trials so far;
an index for finding participants past their time limit.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 04:40:00

The backfill counts what ``study.tallies`` counts: the pair and rating trials that have
images, of participants who have not dropped out (outcome empty or completed). The variant
pair is ordered in Python (code-point order, as the app orders it), not by the database's
collation.
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

EXCLUDED_OUTCOMES = ("failed_attention", "timed_out", "declined")


def upgrade() -> None:
    tally_pairs = op.create_table(
        "tally_pairs",
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("criterion", sa.String(length=100), nullable=False),
        sa.Column("variant_a", sa.String(length=200), nullable=False),
        sa.Column("variant_b", sa.String(length=200), nullable=False),
        sa.Column("assigned", sa.Integer(), nullable=False),
        sa.Column("a_left", sa.Integer(), nullable=False),
        sa.Column("a_wins", sa.Integer(), nullable=False),
        sa.Column("b_wins", sa.Integer(), nullable=False),
        sa.Column("ties", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_tally_pairs_study_id_studies")
        ),
        sa.PrimaryKeyConstraint(
            "study_id", "criterion", "variant_a", "variant_b", name=op.f("pk_tally_pairs")
        ),
    )
    tally_cells = op.create_table(
        "tally_cells",
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("criterion", sa.String(length=100), nullable=False),
        sa.Column("variant_a", sa.String(length=200), nullable=False),
        sa.Column("variant_b", sa.String(length=200), nullable=False),
        sa.Column("prompt_id", sa.String(length=200), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("assigned", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_tally_cells_study_id_studies")
        ),
        sa.PrimaryKeyConstraint(
            "study_id",
            "criterion",
            "variant_a",
            "variant_b",
            "prompt_id",
            "seed",
            name=op.f("pk_tally_cells"),
        ),
    )
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.create_index(
            "ix_participants_study_id_deadline_at", ["study_id", "deadline_at"], unique=False
        )
    _backfill(tally_pairs, tally_cells)


def _backfill(tally_pairs: sa.Table, tally_cells: sa.Table) -> None:
    trials, participants = sa.table(
        "trials",
        sa.column("id"), sa.column("participant_id"), sa.column("kind"),
        sa.column("criterion"), sa.column("prompt_id"), sa.column("seed"),
        sa.column("left_id"), sa.column("right_id"),
    ), sa.table("participants", sa.column("id"), sa.column("study_id"), sa.column("outcome"))  # fmt: skip
    stimuli = sa.table("stimuli", sa.column("id"), sa.column("variant"))
    answers = sa.table("answers", sa.column("trial_id"), sa.column("choice"))
    left, right = stimuli.alias("l"), stimuli.alias("r")
    rows = op.get_bind().execute(
        sa.select(
            participants.c.study_id, trials.c.criterion, trials.c.prompt_id, trials.c.seed,
            left.c.variant, right.c.variant, answers.c.choice, sa.func.count(),
        )
        .select_from(trials)
        .join(participants, participants.c.id == trials.c.participant_id)
        .join(left, left.c.id == trials.c.left_id)
        .outerjoin(right, right.c.id == trials.c.right_id)
        .outerjoin(answers, answers.c.trial_id == trials.c.id)
        .where(
            trials.c.kind.in_(("pair", "rating")),
            sa.or_(
                participants.c.outcome.is_(None),
                participants.c.outcome.not_in(EXCLUDED_OUTCOMES),
            ),
        )
        .group_by(
            participants.c.study_id, trials.c.criterion, trials.c.prompt_id, trials.c.seed,
            left.c.variant, right.c.variant, answers.c.choice,
        )
    ).all()  # fmt: skip
    pairs: dict[tuple, Counter] = {}
    cells: Counter = Counter()
    for study_id, criterion, prompt_id, seed, lv, rv, choice, n in rows:
        a, b = (lv, rv or "") if rv is None or lv < rv else (rv, lv)
        cells[(study_id, criterion, a, b, prompt_id, seed)] += n
        if rv is None:
            continue
        counts = pairs.setdefault((study_id, criterion, a, b), Counter())
        counts["assigned"] += n
        counts["a_left"] += n if lv == a else 0
        if choice == "tie":
            counts["ties"] += n
        elif choice is not None:
            counts["a_wins" if (choice == "left") == (lv == a) else "b_wins"] += n
    keys = ("study_id", "criterion", "variant_a", "variant_b")
    pair_rows = [
        {
            **dict(zip(keys, key, strict=True)),
            **{c: counts[c] for c in ("assigned", "a_left", "a_wins", "b_wins", "ties")},
        }
        for key, counts in pairs.items()
    ]
    cell_rows = [
        {**dict(zip((*keys, "prompt_id", "seed"), key, strict=True)), "assigned": n}
        for key, n in cells.items()
    ]
    for table, table_rows in ((tally_pairs, pair_rows), (tally_cells, cell_rows)):
        if table_rows:
            op.bulk_insert(table, table_rows)


def downgrade() -> None:
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_index("ix_participants_study_id_deadline_at")
    op.drop_table("tally_cells")
    op.drop_table("tally_pairs")
