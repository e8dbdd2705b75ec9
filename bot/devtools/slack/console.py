"""Console: a plain-text terminal front-end over FakeSlack + SlackSender, for trying the bot without Slack."""

from __future__ import annotations

import difflib
import html
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from bot.devtools.slack.blockkit import iter_elements, text_of
from bot.devtools.slack.client import Button, SlackSender, buttons
from bot.devtools.slack.server import FakeSlack, FileUpload

HELP = """commands:
  /migrate <args>     send a slash command as the current user
  <n>                 click button [n] of the message listed last;  <n>!  also accepts its confirm dialog
  click <words>       click the first button whose label contains <words>: on the message listed last, else
                      on the newest earlier message that has one (stable in scripts)
  click! <words>      the same, accepting the button's confirm dialog without asking (for piped scripts)
  show [run]          print a run's message again with its buttons (the newest run, or the run whose id
                      starts with <run>)
  files               list the files the bot uploaded;  file <n>  shows file n (binary files are saved)
  home                open the App Home tab
  user <n|name|id>    act as another user;  users  lists them
  wait [seconds]      wait until no step of the current run is running and the bot has gone quiet
  help                this text;  quit  leaves (so does end of input)
A button with a confirm dialog asks first: y confirms, n (or an empty line) declines, as its two buttons do.
`#` starts a comment (a whole line, or after two spaces). When the input is not a terminal, a line that
fails (no such button, unknown command, ...) is reported again at the end and the exit status is 1."""

_MENTION = re.compile(r"<([@#!])([^>|]*)(?:\|([^>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto):[^>|]+)(?:\|([^>]*))?>")
_EMPHASIS = re.compile(r"(?<![\w*_~])([*_~])(?=\S)(.+?)(?<=\S)\1(?![\w*_~])")
_COMMENT = re.compile(r"(?:^|\s{2,})#.*$")
# A run's status message: its header reads "Migration <run id> · <env>", its footer "run `<run id>` · v<n>".
_RUN_HEADER = re.compile(r"^Migration (\S+)(?: ·|$)")
_RUN_FOOTER = re.compile(r"\brun `([^`\s]+)`")
# A step at work: the ⏳ icon, or "— running" / ": running" after its label (not the run's "🔵 Running").
_WORKING = re.compile(r"⏳|[—:] running\b")
_SLACK_BAD_COMMAND = ('{command} is not a valid command. In Slack, all messages that start with the "/" '
                      "character are interpreted as commands.")


@dataclass(frozen=True)
class _Target:
    """A message a button sits on: a channel message (or thread reply) or an ephemeral of the current user."""

    channel: str
    ts: str
    ephemeral: bool


@dataclass(frozen=True)
class _Pending:
    """What the console sent last, to tell when the bot has reacted to it."""

    at: float
    user: str
    target: _Target | None
    fingerprint: str | None
    ephemerals: int


_Entry = tuple[Button, dict[str, Any], str, bool]  # button, message, channel, ephemeral


class Console:
    """Reads commands from `input`, drives the bot through `sender`, prints what Slack would show."""

    def __init__(self, fake: FakeSlack, sender: SlackSender, *, channel_id: str, users: list[tuple[str, str]],
                 input: TextIO, output: TextIO, quiet_s: float = 0.3,  # noqa: A002 - name from the brief
                 settle_timeout_s: float = 5.0, commands: Iterable[str] = ("/migrate",),
                 files_dir: Path | None = None, wait_timeout_s: float = 600.0, wait_quiet_s: float = 1.0,
                 reaction_timeout_s: float = 60.0, home_timeout_s: float = 10.0,
                 extra: dict[str, tuple[str, Callable[[str], str]]] | None = None) -> None:
        if not users:
            raise ValueError("Console needs at least one user")
        self.fake = fake
        self.sender = sender
        self.channel_id = channel_id
        self.users = list(users)
        self.current = self.users[0][0]
        self.input = input
        self.output = output
        self.quiet_s = quiet_s
        self.settle_timeout_s = settle_timeout_s
        self.commands = sorted(set(commands))
        self.files_dir = files_dir
        self.wait_timeout_s = wait_timeout_s
        self.wait_quiet_s = wait_quiet_s
        self.reaction_timeout_s = reaction_timeout_s
        self.home_timeout_s = home_timeout_s
        self.failures: list[str] = []
        self.extra = dict(extra or {})
        """More commands from whoever runs the console (the demo's `app`): word -> (help line, action(rest))."""
        self._seen: dict[tuple[str, str], str] = {}
        self._seen_ephemerals: dict[str, str] = {}
        self._modal_seen: set[tuple[str, str]] = set()
        self._buttons: list[_Entry] = []
        self._last_button_line = ""
        self._focus: _Target | None = None
        self._pending: _Pending | None = None
        self._interactive = _isatty(input)
        self._echo = not self._interactive
        self._eof = False
        self._lines_read = 0
        self._command_line = (0, "")
        for user_id, name in self.users:
            if fake.user_name(user_id) is None:
                fake.add_user(user_id, name)

    # ------------------------------------------------------------------ loop

    @property
    def exit_status(self) -> int:
        """1 when a line failed and the input is not a terminal (a piped script), else 0."""
        return 1 if self.failures and not self._interactive else 0

    def run(self) -> int:
        """Render, prompt, act — until `quit` or end of input; returns `exit_status`."""
        self._print(f"devslack console: channel {self._channel_label(self.channel_id)}, "
                    f"acting as @{self._name(self.current)}. Type `help` for commands.")
        while not self._eof:
            self.render()
            raw = self._readline(f"{self._name(self.current)}> ")
            if raw is None:
                break
            self._command_line = (self._lines_read, raw)
            line = _strip_comment(raw)
            if not line:
                continue
            if line in ("quit", "exit"):
                break
            try:
                self.execute(line)
            except Exception as exc:  # keep the demo alive; show the problem in one line
                self._fail(f"{type(exc).__name__}: {exc}")
        self.render()
        if self.failures and not self._interactive:
            self._print(f"! {len(self.failures)} line(s) of the input failed:")
            for failure in self.failures:
                self._print(f"!   {failure}")
        return self.exit_status

    def execute(self, line: str) -> None:
        """Run one command line (see HELP)."""
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if line.startswith("/"):
            self._slash(word, rest)
        elif line.isdigit() or (line.endswith("!") and line[:-1].isdigit()):
            self._click_number(int(line.rstrip("!")), accept=line.endswith("!"))
        elif word in ("click", "click!") and rest:
            self._click_matching(rest, accept=word == "click!")
        elif line == "users":
            for i, (user_id, name) in enumerate(self.users, 1):
                mark = "*" if user_id == self.current else " "
                self._print(f" {mark}{i}. @{name} ({user_id})")
        elif word == "user":
            self._switch_user(rest)
        elif word == "show":
            self._show(rest)
        elif line == "files":
            self._list_files()
        elif word == "file" and rest:
            self._show_file(rest)
        elif line == "home":
            self._home()
        elif word == "wait" and (not rest or _is_number(rest)):
            self._wait_for_the_bot(float(rest) if rest else self.wait_timeout_s)
        elif word in self.extra:
            try:
                self._print(self.extra[word][1](rest))
            except ValueError as exc:
                self._fail(str(exc))
        elif line in ("help", "?"):
            self._print(HELP + "".join(f"\n  {help_line}" for help_line, _ in self.extra.values()))
        else:
            self._fail(f"unknown command {line!r}; type `help`")

    def _fail(self, message: str) -> None:
        """Report a line that did not do what it says; a piped script then exits with status 1."""
        self._print(f"! {message}")
        number, raw = self._command_line
        self.failures.append(f"line {number}: {raw.strip()!r}: {message}")

    # ------------------------------------------------------------------ commands

    def _slash(self, command: str, text: str) -> None:
        if command not in self.commands:
            close = difflib.get_close_matches(command, self.commands, n=1)
            self._fail(_SLACK_BAD_COMMAND.format(command=command) + (f" Did you mean {close[0]}?" if close else ""))
            return
        before = len(self.fake.ephemerals(user=self.current))
        self._act(lambda: self.sender.slash(self.current, text, channel_id=self.channel_id, command=command))
        said = self.fake.ephemerals(user=self.current)[before:]
        if said and str(said[-1].get("text", "")).startswith("⏳"):
            # A slow verb (a check, a release resolved from git): its answer follows, as in Slack, a moment later.
            deadline = time.monotonic() + self.reaction_timeout_s
            while len(self.fake.ephemerals(user=self.current)) <= before + len(said) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            self._settle(time.time())

    def _switch_user(self, arg: str) -> None:
        wanted = arg.lstrip("@").lower()
        for i, (user_id, name) in enumerate(self.users, 1):
            if wanted in (str(i), user_id.lower(), name.lower()):
                self.current = user_id
                self._last_button_line = ""
                self._print(f"now acting as @{name} ({user_id})")
                return
        self._fail(f"no user {arg!r}; `users` lists them")

    def _wait_for_the_bot(self, timeout_s: float) -> None:
        """Until the bot has answered the last action, no step of the current run is running, and it is quiet.

        Quiet alone is not enough: a slow machine may take longer than any quiet time to mark a step running.
        """
        deadline = time.monotonic() + timeout_s
        pending, self._pending = self._pending, None
        if pending is not None:
            answered = min(deadline, time.monotonic() + self.reaction_timeout_s)
            while not self._reacted(pending):
                if time.monotonic() >= answered:
                    self._print("  (the bot has not answered the last action yet; waiting for its steps anyway)")
                    break
                time.sleep(0.05)
        shown: list[str] = []
        started = time.time()
        while True:
            left = deadline - time.monotonic()
            quiet = left > 0 and self.fake.wait_idle(quiet_s=self.wait_quiet_s, timeout=min(left, 1.0),
                                                     since=started)
            running = self._work_in_progress()
            if quiet and not running:
                return
            if running and running != shown:  # what is at work, as it changes (the message follows when done)
                self._print("\n".join(f"  … {line}" for line in running))
                shown = running
            if time.monotonic() >= deadline:
                self._fail(f"gave up waiting after {timeout_s:g} s: " + ("; ".join(running)[:200] if running
                                                                         else "the bot never went quiet"))
                return
            time.sleep(0.05)

    def _reacted(self, pending: _Pending) -> bool:
        """Whether the bot has answered `pending`: the clicked message changed, or it said or opened something."""
        if any(c.at >= pending.at and c.method in ("views.open", "views.push") for c in self.fake.calls):
            return True
        if len(self.fake.ephemerals(user=pending.user)) > pending.ephemerals:
            return True
        target = pending.target
        if target is not None and not target.ephemeral:
            msg = self.fake.message(target.channel, target.ts)
            return msg is None or _fingerprint(msg) != pending.fingerprint
        last = self.fake.last_call_at()
        return last is not None and last >= pending.at

    def _wip_messages(self) -> list[dict[str, Any]]:
        """The current run's message (the run in focus, else the newest); every channel message if there is none."""
        run = self._current_run()
        return [run] if run is not None else self.fake.channel_messages(self.channel_id)

    def _work_in_progress(self) -> list[str]:
        """The lines of the current run's message that show a step at work."""
        return [line for msg in self._wip_messages() for line in self._message_lines(msg) if _WORKING.search(line)]

    def _current_run(self) -> dict[str, Any] | None:
        focus = self._focus
        if focus is not None and not focus.ephemeral:
            msg = self.fake.message(focus.channel, focus.ts)
            if msg is not None and _run_id(msg):
                return msg
        runs = self._run_messages()
        return runs[0][2] if runs else None

    def _run_messages(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(run id, channel, message) of every run status message, newest first."""
        found = []
        for channel, msg in reversed(self.fake.all_messages()):
            if msg.get("thread_ts") not in (None, msg["ts"]):
                continue
            run_id = _run_id(msg)
            if run_id:
                found.append((run_id, channel, msg))
        return found

    def _show(self, arg: str) -> None:
        self.render()  # anything new first, so what `show` prints is the latest
        runs = self._run_messages()
        if not runs:
            self._fail("there is no run message yet; `/migrate <env>` starts a run")
            return
        matches = runs
        if arg:
            matches = [r for r in runs if r[0].startswith(arg)] or [r for r in runs if arg in r[0]]
            if not matches:
                self._fail(f"no run {arg!r}; runs in this workspace: {', '.join(r[0] for r in runs[:10])}")
                return
            if len(matches) > 1:
                self._print(f"({len(matches)} runs match {arg!r}; showing the newest, {matches[0][0]})")
        run_id, channel, msg = matches[0]
        self._seen[(channel, msg["ts"])] = _fingerprint(msg)
        self._print_message(f"[{self._channel_label(channel)}] run {run_id} as it is now ({msg['ts'][-6:]})", msg)
        self._focus = _Target(channel, msg["ts"], False)
        self._last_button_line = ""
        self._print_buttons(force=True)

    def _list_files(self) -> None:
        files = self.fake.files
        if not files:
            self._print("no files have been uploaded yet")
            return
        for i, upload in enumerate(files, 1):
            where = self._channel_label(upload.channel) if upload.channel else "no channel"
            if upload.thread_ts:
                where += f" thread {upload.thread_ts[-6:]}"
            title = f" “{upload.title}”" if upload.title and upload.title != upload.name else ""
            self._print(f"  [{i}] {upload.name}{title} — {len(upload.content)} bytes, in {where}")
        self._print("  `file <n>` shows one")

    def _show_file(self, arg: str) -> None:
        files = self.fake.files
        if not arg.isdigit() or not 1 <= int(arg) <= len(files):
            self._fail(f"no file {arg!r}; `files` lists {len(files)}" if files else "no files have been uploaded yet")
            return
        upload = files[int(arg) - 1]
        text = _as_text(upload.content)
        self._print(f"┌ file {arg}: {upload.name} ({len(upload.content)} bytes)")
        if text is not None:
            lines = text.splitlines()
            for line in lines[:400]:
                self._print(f"│ {line}")
            if len(lines) > 400:
                self._print(f"│ … {len(lines) - 400} more lines")
            self._print("└")
            return
        kind = _kind(upload)
        if self.files_dir is None:
            self._print(f"└ {kind}, not shown in a terminal")
            return
        self.files_dir.mkdir(parents=True, exist_ok=True)
        path = self.files_dir / (re.sub(r"[^\w.-]", "_", upload.name).lstrip(".") or upload.id)
        path.write_bytes(upload.content)
        self._print(f"└ {kind}, saved as {path}")

    def _home(self) -> None:
        started = time.time()
        response = self.sender.home_opened(self.current)
        if response.status_code != 200:
            self._fail(f"the bot answered HTTP {response.status_code}: {response.text[:200]}")
            return

        def published() -> bool:
            return any(c.ok and c.at >= started and c.args.get("user_id") == self.current
                       for c in self.fake.calls_to("views.publish"))

        try:
            self.fake.wait_for(published, timeout=self.home_timeout_s, interval=0.05)
        except TimeoutError:
            self._fail(f"the bot published no App Home for @{self._name(self.current)} "
                       f"within {self.home_timeout_s:g} s")
            return
        view = self.fake.home(self.current) or {}
        self._print(f"┌ App Home of @{self._name(self.current)}")
        for block in view.get("blocks") or []:
            for line in self._block_lines(block):
                self._print(f"│ {line}")
        self._print("└")

    # ------------------------------------------------------------------ clicks

    def _click_number(self, number: int, *, accept: bool) -> None:
        if not self._buttons:
            self._fail("there are no buttons to click")
            return
        if not 1 <= number <= len(self._buttons):
            self._fail(f"pick a button between 1 and {len(self._buttons)}")
            return
        self._click(self._buttons[number - 1], f"[{number}] ", accept=accept)

    def _click_matching(self, words: str, *, accept: bool) -> None:
        self.render()  # the click goes to what is on screen now, as in Slack
        wanted = words.lower()
        for number, entry in enumerate(self._buttons, 1):
            if wanted in self._label(entry[0], entry[1]).lower():
                self._click(entry, f"[{number}] ", accept=accept)
                return
        listed = {(e[2], e[1]["ts"]) for e in self._buttons}
        for ts, msg, channel, ephemeral in reversed(self._candidates()):
            if (channel, ts) in listed:
                continue
            for button in buttons(msg):
                if wanted in self._label(button, msg).lower():
                    self._click((button, msg, channel, ephemeral), f"(on the earlier message {ts[-6:]}) ",
                                accept=accept)
                    return
        self._fail(f"no button matches {words!r}")

    def _click(self, entry: _Entry, where: str, *, accept: bool) -> None:
        button, message, channel, ephemeral = entry
        target = _Target(channel, message["ts"], ephemeral)
        current = self._fetch(target)
        if current is None:
            self._fail(f"the message with “{button.text}” is gone")
            return
        now = next((b for b in buttons(current) if b.action_id == button.action_id), None)
        if now is None:
            self._fail(f"“{button.text}” is no longer on that message (it has changed since it was listed)")
            self._last_button_line = ""
            return
        self._print(f"clicking {where}{now.text}")
        if now.confirm and not self._confirmed(now.confirm, accept=accept):
            return
        self._focus = target
        self._act(lambda: self.sender.click(self.current, channel_id=channel, message=current,
                                            action_id=now.action_id, is_ephemeral=ephemeral), target=target)

    def _confirmed(self, confirm: dict[str, Any], *, accept: bool) -> bool:
        """Slack's confirm dialog: its title, text and two buttons; True when its confirm button was chosen."""
        ok = text_of(confirm.get("confirm")) or "Yes"
        deny = text_of(confirm.get("deny")) or "Cancel"
        self._print(f"  ┌ confirm dialog: {self.plain(text_of(confirm.get('title')))}")
        for line in self.plain(text_of(confirm.get("text"))).splitlines():
            self._print(f"  │ {line}")
        if accept:
            self._print(f"  └ [{ok}] pressed (click! accepts without asking)")
            return True
        while True:
            raw = self._readline(f"  └ [{ok}] or [{deny}]? y/n: ")
            answer = _strip_comment(raw or "").lower()
            if raw is None or answer in ("", "n", "no", deny.lower()):
                self._print(f"  [{deny}] pressed: nothing was sent to the bot")
                return False
            if answer in ("y", "yes", ok.lower()):
                return True
            if not self._interactive:
                self._fail(f"the confirm dialog needs y or n, not {raw.strip()!r} (nothing was sent to the bot)")
                return False
            self._print("  answer y or n")

    def _label(self, button: Button, message: dict[str, Any]) -> str:
        """The button's text, plus the text of the section it sits in (so 'Confirm' says what it confirms)."""
        for block in message.get("blocks") or []:
            accessory = block.get("accessory") or {}
            if block.get("type") == "section" and accessory.get("action_id") == button.action_id:
                context = self.plain(text_of(block.get("text"))).lstrip("⬜❌⚠️ ").split(" — ")[0]
                return f"{button.text}: {context[:60]}"
        return button.text

    def _act(self, send: Callable[[], httpx.Response], *, target: _Target | None = None) -> None:
        fingerprint = None
        if target is not None and not target.ephemeral:
            msg = self.fake.message(target.channel, target.ts)
            fingerprint = _fingerprint(msg) if msg is not None else None
        started = time.time()
        self._pending = _Pending(started, self.current, target, fingerprint,
                                 len(self.fake.ephemerals(user=self.current)))
        response = send()
        if response.status_code != 200:
            self._fail(f"the bot answered HTTP {response.status_code}: {response.text[:200]}")
        self._settle(started)
        self._handle_modals()

    def _settle(self, since: float) -> None:
        self.fake.wait_idle(quiet_s=self.quiet_s, timeout=self.settle_timeout_s, since=since)

    # ------------------------------------------------------------------ messages and buttons

    def _candidates(self) -> list[tuple[str, dict[str, Any], str, bool]]:
        """Every message the current user can see (channel messages, thread replies, their ephemerals), by ts."""
        found: list[tuple[str, dict[str, Any], str, bool]] = [
            (m["ts"], m, ch, False) for ch, m in self.fake.all_messages()]
        found += [(e["ts"], e, e.get("channel") or self.channel_id, True)
                  for e in self.fake.ephemerals(user=self.current)]
        found.sort(key=lambda c: _ts_key(c[0]))
        return found

    def _fetch(self, target: _Target) -> dict[str, Any] | None:
        if not target.ephemeral:
            return self.fake.message(target.channel, target.ts)
        return next((e for e in self.fake.ephemerals(user=self.current) if e["ts"] == target.ts), None)

    def _refresh_buttons(self) -> None:
        """The listed buttons: those of the message in focus (the last one printed with buttons, clicked or
        shown), else of the newest message that has any."""
        focused = self._fetch(self._focus) if self._focus is not None else None
        if focused is not None and buttons(focused):
            assert self._focus is not None
            self._buttons = [(b, focused, self._focus.channel, self._focus.ephemeral) for b in buttons(focused)]
            return
        self._buttons = []
        for _ts, msg, channel, ephemeral in reversed(self._candidates()):
            found = buttons(msg)
            if found:
                self._buttons = [(b, msg, channel, ephemeral) for b in found]
                return

    # ------------------------------------------------------------------ modals

    def _handle_modals(self) -> None:
        for _ in range(10):  # a bound against a bot that keeps answering with new views
            view = self.fake.top_modal(self.current)
            if view is None or (view["id"], view["hash"]) in self._modal_seen or self._eof:
                return
            self._modal_seen.add((view["id"], view["hash"]))
            self.render()
            values = self._ask_modal(view)
            if values is None:
                self.fake.dismiss_modals(self.current)
                self._print("(modal closed without submitting)")
                return
            started = time.time()
            response = self.sender.submit_view(self.current, view, values)
            body: Any = None
            if response.content:
                try:
                    body = response.json()
                except ValueError:
                    body = None
            if response.status_code != 200:
                self._fail(f"the bot answered HTTP {response.status_code}: {response.text[:200]}")
            elif isinstance(body, dict) and body.get("response_action") == "errors":
                for block_id, message in (body.get("errors") or {}).items():
                    self._print(f"  ! {block_id}: {message}")
                self._modal_seen.discard((view["id"], view["hash"]))  # ask again
            self._settle(started)

    def _ask_modal(self, view: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]] | None:
        """Prompt for every input of the modal; None when the user typed `cancel` or input ended."""
        title = text_of(view.get("title"))
        self._print(f"┌ modal: {title}   (answer each field; `cancel` closes the modal)")
        values: dict[str, dict[str, dict[str, Any]]] = {}
        for block in view.get("blocks") or []:
            if block.get("type") != "input":
                for line in self._block_lines(block):
                    self._print(f"│ {line}")
                continue
            element = block.get("element") or {}
            label = text_of(block.get("label"))
            if block.get("optional"):
                label += " (optional)"
            answer = self._ask_element(label, element, block)
            if answer is None:
                return None
            block_id = block.get("block_id") or ""
            values.setdefault(block_id, {})[element.get("action_id") or ""] = answer
        submit = text_of(view.get("submit")) or "Submit"
        self._print(f"└ [{submit}]")
        return values

    def _ask_element(self, label: str, element: dict[str, Any], block: dict[str, Any]) -> dict[str, Any] | None:
        kind = str(element.get("type") or "plain_text_input")
        options = element.get("options") or [o for g in element.get("option_groups") or []
                                             for o in g.get("options") or []]
        if block.get("hint"):
            self._print(f"│ ({text_of(block['hint'])})")
        if options:
            for i, option in enumerate(options, 1):
                self._print(f"│   {i}) {text_of(option.get('text'))}")
        default = _initial(element)
        prompt = f"{label}{f' [{default}]' if default else ''}: "
        raw = self._readline(prompt)
        if raw is None:
            self._eof = True
            return None
        raw = raw.strip()
        if raw == "cancel":
            return None
        if not raw:
            raw = default
        result: dict[str, Any] = {"type": kind}
        if kind in ("static_select", "radio_buttons", "external_select"):
            result["selected_option"] = _pick(options, raw)
        elif kind in ("checkboxes", "multi_static_select", "multi_external_select"):
            picked = [_pick(options, part.strip()) for part in raw.split(",") if part.strip()]
            result["selected_options"] = [p for p in picked if p]
        elif kind == "users_select":
            result["selected_user"] = self._user_id(raw) if raw else None
        elif kind == "multi_users_select":
            result["selected_users"] = [self._user_id(p.strip()) for p in raw.split(",") if p.strip()]
        elif kind in ("conversations_select", "channels_select"):
            key = "selected_conversation" if kind == "conversations_select" else "selected_channel"
            result[key] = raw or None
        elif kind in ("multi_conversations_select", "multi_channels_select"):
            key = "selected_conversations" if kind == "multi_conversations_select" else "selected_channels"
            result[key] = [p.strip() for p in raw.split(",") if p.strip()]
        elif kind == "datepicker":
            result["selected_date"] = raw or None
        elif kind == "timepicker":
            result["selected_time"] = raw or None
            if element.get("timezone"):
                result["timezone"] = element["timezone"]
        elif kind == "datetimepicker":
            result["selected_date_time"] = int(raw) if raw.isdigit() else None
        else:
            result["value"] = raw or None
        return result

    def _user_id(self, text: str) -> str:
        wanted = text.lstrip("@").lower()
        for i, (user_id, name) in enumerate(self.users, 1):
            if wanted in (str(i), user_id.lower(), name.lower()):
                return user_id
        return text

    # ------------------------------------------------------------------ rendering

    def render(self) -> None:
        """Print new/changed messages and new ephemerals for the current user, then the listed buttons."""
        printed = False
        items: list[tuple[tuple[int, int], str, dict[str, Any], bool]] = [
            (_ts_key(m["ts"]), ch, m, False) for ch, m in self.fake.all_messages()]
        items += [(_ts_key(e["ts"]), e.get("channel") or "", e, True) for e in self.fake.ephemerals(user=self.current)]
        items.sort(key=lambda item: item[0])
        for _key, channel, msg, ephemeral in items:
            fingerprint = _fingerprint(msg)
            where = self._channel_label(channel) if channel else "?"
            if ephemeral:
                if self._seen_ephemerals.get(msg["ts"]) == fingerprint:
                    continue
                self._seen_ephemerals[msg["ts"]] = fingerprint
                self._print_message(f"[{where}] only visible to you:", msg)
            else:
                key = (channel, msg["ts"])
                previous = self._seen.get(key)
                if previous == fingerprint:
                    continue
                self._seen[key] = fingerprint
                tag = "new" if previous is None else "updated"
                if msg.get("thread_ts") and msg["thread_ts"] != msg["ts"]:
                    where += f" thread {msg['thread_ts'][-6:]}"
                self._print_message(f"[{where}] @{self._name(msg.get('user', ''))} ({tag}, {msg['ts'][-6:]})", msg)
            printed = True
            if buttons(msg):  # the buttons listed are those of the last message printed with buttons
                self._focus = _Target(channel or self.channel_id, msg["ts"], ephemeral)
        self._print_buttons(force=printed)

    def _print_buttons(self, *, force: bool) -> None:
        self._refresh_buttons()
        line = "\n".join(f"  [{i}] {self._label(b, msg)}" for i, (b, msg, *_rest) in enumerate(self._buttons, 1))
        if line and (force or line != self._last_button_line):
            self._print(line)
        self._last_button_line = line

    def _print_message(self, heading: str, msg: dict[str, Any]) -> None:
        self._print(heading)
        for line in self._message_lines(msg):
            self._print(f"    {line}")

    def _message_lines(self, msg: dict[str, Any]) -> list[str]:
        lines: list[str] = []
        for block in msg.get("blocks") or []:
            lines.extend(self._block_lines(block))
        if not lines and msg.get("text"):
            lines = self.plain(msg["text"]).splitlines()
        if msg.get("files"):
            numbers = {upload.id: i for i, upload in enumerate(self.fake.files, 1)}
            for file in msg["files"]:
                number = numbers.get(str(file.get("id")))
                label = f"[file {number}]" if number else "[file]"
                hint = f" — `file {number}` shows it" if number else ""
                lines.append(f"{label} {file.get('name')} ({file.get('size', '?')} bytes){hint}")
        for reaction in msg.get("reactions") or []:
            lines.append(f":{reaction['name']}: {reaction['count']}")
        return lines

    def _block_lines(self, block: dict[str, Any]) -> list[str]:
        kind = block.get("type")
        lines: list[str] = []
        if kind == "header":
            lines.append(f"== {self.plain(text_of(block.get('text')))} ==")
        elif kind == "section":
            if block.get("text"):
                lines.extend(self.plain(text_of(block["text"])).splitlines())
            fields = [self.plain(text_of(f)).replace("\n", " ") for f in block.get("fields") or []]
            if fields:
                lines.append(" | ".join(fields))
        elif kind == "context":
            parts = [self.plain(text_of(e)) if e.get("type") != "image" else f"[{e.get('alt_text', 'image')}]"
                     for e in block.get("elements") or []]
            lines.append(" · ".join(p for p in parts if p))
        elif kind == "markdown":
            lines.extend(self.plain(str(block.get("text", ""))).splitlines())
        elif kind == "divider":
            lines.append("-" * 20)
        elif kind == "rich_text":
            lines.extend(self.plain(_rich_text(block)).splitlines())
        elif kind == "image":
            lines.append(f"[image: {block.get('alt_text', '')}]")
        elif kind == "input":
            lines.append(f"{text_of(block.get('label'))}: ...")
        controls = [f"[{text_of(e.get('text')) or e.get('type')}]" for e in iter_elements(block)
                    if kind != "input"]
        if controls:
            lines.append(" ".join(controls))
        return lines

    def plain(self, text: str) -> str:
        """Slack mrkdwn → plain text: mentions as @name/#name, dates as their fallback, no emphasis marks."""
        def mention(match: re.Match[str]) -> str:
            sigil, body, label = match.group(1), match.group(2), match.group(3)
            if sigil == "@":
                return "@" + (label or self._name(body))
            if sigil == "#":
                return "#" + (label or self.fake.channel_name(body) or body)
            if body.startswith("subteam^"):
                group = body.split("^", 1)[1]
                return label or "@" + (self.fake.usergroup_handle(group) or group)
            if body.startswith("date^"):
                return label or body
            return label or "@" + body  # <!here>, <!channel>
        text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
        text = _MENTION.sub(mention, text)
        text = _EMPHASIS.sub(r"\2", text)
        return html.unescape(text)

    def _name(self, user_id: str) -> str:
        for uid, name in self.users:
            if uid == user_id:
                return name
        return self.fake.user_name(user_id) or user_id

    def _channel_label(self, channel_id: str) -> str:
        name = self.fake.channel_name(channel_id)
        return f"#{name}" if name else channel_id

    # ------------------------------------------------------------------ io

    def _print(self, text: str) -> None:
        self.output.write(text + "\n")
        self.output.flush()

    def _readline(self, prompt: str) -> str | None:
        self.output.write(prompt)
        self.output.flush()
        line = self.input.readline()
        if not line:
            self.output.write("\n")
            self._eof = True
            return None
        self._lines_read += 1
        if self._echo:
            self.output.write(line if line.endswith("\n") else line + "\n")
        return line.rstrip("\n")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _strip_comment(line: str) -> str:
    """The line without a `#` comment (a whole line, or after two spaces), stripped."""
    return _COMMENT.sub("", line).strip()


def _is_number(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def _run_id(msg: dict[str, Any]) -> str | None:
    """The run id of a run status message (its header, else its footer), or None for any other message."""
    for block in msg.get("blocks") or []:
        if block.get("type") == "header":
            match = _RUN_HEADER.match(text_of(block.get("text")))
            if match:
                return match.group(1)
    for block in msg.get("blocks") or []:
        if block.get("type") == "context":
            for element in block.get("elements") or []:
                match = _RUN_FOOTER.search(text_of(element))
                if match:
                    return match.group(1)
    return None


def _as_text(data: bytes) -> str | None:
    """The file as text when it is UTF-8 without NUL bytes, else None."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _kind(upload: FileUpload) -> str:
    data = upload.content
    if data.startswith(b"\x89PNG"):
        return f"a PNG image of {len(data)} bytes"
    if data.startswith(b"%PDF"):
        return f"a PDF of {len(data)} bytes"
    return f"a binary file of {len(data)} bytes"


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, fraction = ts.partition(".")
    return int(seconds), int(fraction or 0)


def _fingerprint(msg: dict[str, Any]) -> str:
    keys = ("text", "blocks", "files", "reactions", "attachments")
    return json.dumps({k: msg.get(k) for k in keys}, sort_keys=True, default=str)


def _initial(element: dict[str, Any]) -> str:
    for key in ("initial_value", "initial_date", "initial_time", "initial_user", "initial_conversation",
                "initial_channel", "initial_date_time"):
        if element.get(key) not in (None, ""):
            return str(element[key])
    option = element.get("initial_option")
    if isinstance(option, dict):
        return text_of(option.get("text"))
    return ""


def _pick(options: list[dict[str, Any]], answer: str) -> dict[str, Any] | None:
    if not answer:
        return None
    if answer.isdigit() and 1 <= int(answer) <= len(options):
        return options[int(answer) - 1]
    lowered = answer.lower()
    for option in options:
        if lowered in (str(option.get("value", "")).lower(), text_of(option.get("text")).lower()):
            return option
    return None


def _rich_text(node: Any) -> str:
    if isinstance(node, dict):
        if node.get("type") == "text":
            return str(node.get("text", ""))
        if node.get("type") == "user":
            return f"<@{node.get('user_id')}>"
        if node.get("type") == "link":
            return str(node.get("text") or node.get("url", ""))
        inner = "".join(_rich_text(e) for e in node.get("elements") or [])
        return inner + ("\n" if node.get("type") in ("rich_text_section", "rich_text_preformatted") else "")
    return ""
