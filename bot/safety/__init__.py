"""Migration safety review: squawk + pglast lock analysis + live table sizes, and `migrate-bot lint`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.safety.review import Finding, MigrationReview, Review, review_migrations

__all__ = ["Finding", "MigrationReview", "Review", "review_migrations"]


def __getattr__(name: str) -> Any:
    """Import the review on first use: ``bot.safety.analysis`` alone (the catalog, the pre-flight) stays light."""
    if name in __all__:
        from bot.safety import review

        return getattr(review, name)
    raise AttributeError(f"module 'bot.safety' has no attribute {name!r}")
