"""The responses export contract (design.md): its columns, in order.

Kept apart from ``study.export`` (which needs the database) so that the analysis package
can read the contract without importing SQLAlchemy models or Flask.
"""

#: The contract's columns, in the contract's order.
CONTRACT_COLUMNS = [
    "study",
    "participant",
    "trial_index",
    "kind",
    "criterion",
    "prompt_id",
    "left_image",
    "right_image",
    "left_variant",
    "right_variant",
    "choice",
    "rating",
    "rt_ms",
    "server_ms",
    "shown_at",
    "answered_at",
    "passed_checks",
]

#: Columns the study's export writes beyond the contract.
EXTRA_COLUMNS = ["study_version", "seed", "check", "check_passed", "participant_outcome"]
