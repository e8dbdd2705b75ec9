"""Backups: take, verify, fetch and restore them, and rehearse the migrations on a restored copy."""
