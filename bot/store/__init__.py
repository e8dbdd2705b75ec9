"""Everything the bot keeps in Redis: the only package that speaks to Redis."""
