"""P1's side B: a bare Bolt app whose listeners only ack() (or ack and update), served like the bot (build_asgi + uvicorn)."""

from __future__ import annotations

import argparse
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _NoStore:
    """build_asgi's /healthz asks the store for a ping; B has no Redis."""

    def ping(self) -> bool:
        return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--signing-secret", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--slack-api-url", required=True)
    parser.add_argument("--process-before-response", action="store_true",
                        help="the bot's App option instead of Bolt's default")
    parser.add_argument("--update", action="store_true",
                        help="a click also makes one chat.update of the clicked message with its own blocks "
                             "(the floor of click to updated message)")
    args = parser.parse_args()

    import uvicorn
    from slack_bolt import Ack, App
    from slack_sdk import WebClient

    from bot.server import build_asgi

    # Bolt's defaults as a new app would use them (listeners on a 32-thread pool, the request thread polling for
    # ack() every 10 ms), no token verification. With --process-before-response, the bot's own App options
    # (bot.app.build_bolt_app): each listener runs on the request's thread.
    app = App(client=WebClient(token=args.token, base_url=args.slack_api_url.rstrip("/") + "/"),
              signing_secret=args.signing_secret, token_verification_enabled=False,
              listener_executor=ThreadPoolExecutor(max_workers=32, thread_name_prefix="listener"),
              process_before_response=args.process_before_response,
              raise_error_for_unhandled_request=False)

    @app.command("/migrate")
    def migrate(ack: Ack) -> None:
        ack()

    @app.action(re.compile(r".+"))
    def click(ack: Ack, body: dict, client: WebClient) -> None:  # type: ignore[type-arg]
        ack()
        if args.update:
            message = body.get("message") or {}
            client.chat_update(channel=body["channel"]["id"], ts=message["ts"], blocks=message.get("blocks"),
                               text=message.get("text") or "updated")

    # Same uvicorn.run arguments as `migrate-bot serve` (bot/cli/serve.py).
    uvicorn.run(build_asgi(app, _NoStore()), host="127.0.0.1", port=args.port, log_config=None,  # type: ignore[arg-type]
                access_log=False, log_level="warning", timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
