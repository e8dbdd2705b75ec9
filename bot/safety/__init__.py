"""Migration safety review: squawk + pglast lock analysis + live table sizes, and `migrate-bot lint`."""

from __future__ import annotations

from bot.safety.review import Finding, MigrationReview, Review, review_migrations

__all__ = ["Finding", "MigrationReview", "Review", "review_migrations"]
