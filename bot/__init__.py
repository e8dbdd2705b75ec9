"""migrate-bot: the Slack chat-ops bot that runs the production database migration runbook."""

__version__ = "0.1.0"
