"""Background work that runs beside the web server: step-owner heartbeats, the interrupted-step reaper, reminders."""
