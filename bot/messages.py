"""Every sentence a Slack user reads from the bot, as small functions in one place."""

from __future__ import annotations

import difflib
from datetime import datetime

USAGE = (
    "*Usage:* `/migrate <env> [--image <tag>]` starts a run · `/migrate status [env|run-id]` · "
    "`/migrate cancel <run-id> [reason]` · `/migrate check <env>` · `/migrate lint <env>` · "
    "`/migrate timeline <run-id>` · `/migrate schedule <env> [YYYY-MM-DD HH:MM 2h \"notes\"]` · "
    "`/migrate windows [env]` · `/migrate help`"
)


def escape(text: str) -> str:
    """User-typed text made inert for Slack mrkdwn: `<!channel>`, `<@U…>` and `<http://x|disguised>` links show
    as typed instead of pinging people or hiding where a link goes. Use it wherever user text reaches Slack."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_date(at: datetime, fmt: str = "{date_short_pretty} {time}") -> str:
    """A date every reader sees in their own time zone, with a UTC fallback."""
    return f"<!date^{int(at.timestamp())}^{fmt}|{at:%Y-%m-%d %H:%M} UTC>"


def unknown_environment(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    return f"Unknown environment `{escape(name)}`.{hint} Known: {', '.join(known)}"


def not_allowed_to_start(user: str, env: str) -> str:
    return (f"<@{user}>, you are not on the requester list for `{env}`, so nothing was started. "
            "Ask an admin to add you (or your user group) to `requesters` in the environments file.")


def not_allowed_to_cancel(env: str) -> str:
    return f"Only the requester, an approver or a requester of `{env}` may cancel this run. Nothing was changed."


def run_started(run_id: str, env: str, channel: str) -> str:
    return (f"Started run `{run_id}` in *{env}*. Its status message is in <#{channel}>: "
            "tick the checklist there, then a second person approves.")


def run_cancelled(run_id: str) -> str:
    return f"Run `{run_id}` is cancelled and the environment lock is released."


def state_store_unavailable() -> str:
    return ("⚠️ The state store (Redis) is unavailable — nothing was changed. "
            "Try again in a minute; if it persists, check Redis and `/healthz`.")


def stale_message() -> str:
    return "This message is out of date — here is the current one. Nothing was changed."


def denied(reason: str) -> str:
    return f"🚫 {reason} The run is unchanged."


def slow_down() -> str:
    return "⏳ You are sending commands or clicks faster than the bot accepts; that one was ignored. Try again in a few seconds."


def checking(verb: str, env: str) -> str:
    what = "Checking" if verb == "check" else "Reviewing the pending migrations of"
    return f"⏳ {what} {env}… the result follows here in a moment."


def internal_error() -> str:
    return "Something went wrong on the bot's side and nothing was changed. The error was logged for the team."


def actor(who: str) -> str:
    """Who did something, for Slack: a user as a mention; a command-line operator `cli:<os user> as <@U…>` with
    its OS user name escaped, so a name like `<!channel>` shows as text."""
    if who == "bot":
        return "the bot"
    if not who.startswith("cli:"):
        return f"<@{who}>"
    name, sep, mapped = who.partition(" as <@")
    if sep and mapped.endswith(">") and ">" not in mapped[:-1]:
        return f"{escape(name)} as <@{mapped}"
    return escape(who)


def audit_line(actor_id: str, action: str, outcome: str, detail: str, at: datetime) -> str:
    who = actor(actor_id)
    icon = {"ok": "•", "denied": "🚫", "failed": "❌", "interrupted": "⚠️"}.get(outcome, "•")
    words = action.replace(".", " ").replace("_", " ")
    text = f"{icon} {slack_date(at, '{time_secs}')} {who} — {words}"
    if detail:
        text += f": {escape(detail)}"
    if outcome not in ("ok",):
        text += f" ({outcome})"
    return text
