"""add project owner

Revision ID: b2
Revises: a1
"""
from alembic import op
import sqlalchemy as sa

revision = "b2"
down_revision = "a1"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("projects", sa.Column("owner", sa.Text))
    op.create_index("projects_owner_idx", "projects", ["owner"])


def downgrade():
    op.drop_index("projects_owner_idx", table_name="projects")
    op.drop_column("projects", "owner")
