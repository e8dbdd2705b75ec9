"""Maintenance windows: the rules, the views, the operations and the reminder delivery."""
