"""What the bot tells its operators about itself: Prometheus metrics, JSON log lines, Sentry reports of its own errors.

The modules here sit just above ``bot.redact`` in the layers, so that the integrations, the store, the engine and
the handlers can all count and report through them; they import nothing of the bot but ``bot.redact``. Whatever
they need from higher up (the runs in Redis, whether the scheduler runs) is handed to them as a function.
"""
