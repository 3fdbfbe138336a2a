"""Alembic environment and versions for the study database: the only source of its schema."""
