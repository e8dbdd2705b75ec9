"""Prisma Migrate on PostgreSQL: the migrations directory (migrations.py) and two runners, native (native.py) and the Prisma CLI (cli.py)."""
