"""Development tools (the Slack stand-in, the demo app, stubs and `migrate-bot demo`): never imported by product code, not in the image."""
