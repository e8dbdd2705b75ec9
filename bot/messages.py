"""Every sentence a Slack user reads from the bot, as small functions in one place."""

from __future__ import annotations

import difflib
from datetime import datetime

USAGE = (
    "*Usage:* `/migrate <env> [<ref>] [--image <tag>]` starts a run (pinned to a tag, branch or SHA) · `/migrate status [env|run-id]` · "
    "`/migrate cancel <run-id> [reason]` · `/migrate check <env>` · `/migrate lint <env>` · "
    "`/migrate timeline <run-id>` · `/migrate schedule <env> [YYYY-MM-DD HH:MM 2h \"notes\"]` · "
    "`/migrate windows [env]` · `/migrate help`"
)


def escape(text: str) -> str:
    """User-typed text made inert for Slack mrkdwn: `<!channel>`, `<@U…>` and `<http://x|disguised>` links show
    as typed instead of pinging people or hiding where a link goes. Use it wherever user text reaches Slack."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Slack has no escape for a backtick: inside a code block one ends the block or starts inline code. Shown text gets
# this look-alike instead (U+02CB MODIFIER LETTER GRAVE ACCENT), so the block holds whatever the output contains.
BACKTICK_LOOKALIKE = "\u02cb"
FENCE = "```"
MESSAGE_LIMIT = 3900
"""Characters in one thread message: Slack shows a longer text cut short, or behind "Show more"."""


def code_block(text: str) -> str:
    """``text`` as a Slack code block that no backtick, mention or link inside it can break or trigger."""
    inner = escape(text).replace("`", BACKTICK_LOOKALIKE).strip("\n")
    return f"{FENCE}{inner or ' '}{FENCE}"


def split_message(parts: str | list[str], limit: int = MESSAGE_LIMIT) -> list[str]:
    """A long text as several messages of at most ``limit`` characters, none of it cut off.

    ``parts`` is a text (split between lines) or a list of paragraphs, each kept whole in one message when it
    fits (a finding and its explanation stay together). Only a paragraph longer than a message is split: between
    lines, and a line too long by itself between words. A code block split between two messages is closed at the
    end of the first and opened again at the start of the next.
    """
    room = limit - 2 * len(FENCE)  # a message may need to open and close a code block around its text
    pieces: list[str] = []
    lines: list[str] = []
    size, in_fence = 0, False

    def flush() -> None:
        nonlocal lines, size
        if lines:
            pieces.append("\n".join(lines) + (FENCE if in_fence else ""))
        lines, size = [], 0

    paragraphs = parts.split("\n") if isinstance(parts, str) else parts
    for paragraph in paragraphs:
        units = [paragraph] if len(paragraph) <= room else _short_lines(paragraph, room)
        for unit in units:
            if lines and size + 1 + len(unit) > room:
                flush()
            lines.append((FENCE if not lines and in_fence else "") + unit)
            size += len(unit) + 1
            if unit.count(FENCE) % 2:
                in_fence = not in_fence
    in_fence = False  # a block the text itself leaves open stays as written
    flush()
    return [piece for piece in pieces if piece.strip()]


def _short_lines(paragraph: str, room: int) -> list[str]:
    """A paragraph as lines of at most ``room`` characters: its own lines, a longer one cut between words."""
    out: list[str] = []
    for line in paragraph.split("\n"):
        while len(line) > room:
            cut = line.rfind(" ", room // 2, room)
            cut = cut if cut > 0 else room
            out.append(line[:cut])
            line = line[cut:].lstrip(" ")
        out.append(line)
    return out


def statements(first: int, last: int | None = None) -> str:
    """Statement indexes (counted from 0) as a person counts them: "statement 2", "statements 3–5"."""
    if last is None or last <= first:
        return f"statement {first + 1}"
    return f"statements {first + 1}–{last + 1}"


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


def resolving_release(env: str, ref: str | None) -> str:
    what = f"`{escape(ref[:60])}`" if ref else "the default branch"
    return f"⏳ Resolving {what} in {env}'s release repository… the run starts here in a moment."


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
