"""create tasks

Revision ID: c3
Revises: b2
"""
from alembic import op
import sqlalchemy as sa

revision = "c3"
down_revision = "b2"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("tasks", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False),
                    sa.Column("title", sa.Text, nullable=False))


def downgrade():
    op.drop_table("tasks")
