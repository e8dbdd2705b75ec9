"""Clients for the outside systems: one module each (Slack, AWS, PostgreSQL, Prisma, HTTP, Sentry, squawk)."""
