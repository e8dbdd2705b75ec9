"""Forms open in time: a button that opens a modal is not queued behind posts that Slack is rate-limiting."""

from __future__ import annotations

import time

from tests.e2e import blocks_text, message, start
from tests.harness import CAROL, MALLORY, PROD_CHANNEL, load_factor, wait_until

RENAME = "20240401000000_rename_email"
STORM = 100_000  # every post and update in the test answers 429 (Retry-After: 1 s) until the storm is lifted


class TestWaiverUnderARateLimitStorm:
    def test_the_waiver_form_opens_within_two_seconds_while_posts_are_held(self, fresh):
        """chat.postMessage and chat.update answer 429 while refused clicks keep every follow-up thread busy
        publishing the run; an approver's "Waive with reason…" still opens its form within 2 s of the click."""
        world = fresh
        fake, sender = world["fake"], world["sender"]
        directory = world["migrations"] / RENAME
        directory.mkdir()
        (directory / "migration.sql").write_text('ALTER TABLE "User" RENAME COLUMN "email" TO "emailAddress";\n')
        run_id, ts = start(world, "pgprod", env="pgprod")
        wait_until(lambda: '"waive"' in blocks_text(world, ts))
        shown = message(world, ts)
        try:
            fake.inject("chat.postMessage", times=STORM, retry_after=1)
            fake.inject("chat.update", times=STORM, retry_after=1)
            # Someone without access clicks on and on: each refusal is audited, so each click's follow-up waits to
            # publish the run, behind Slack's 429s. Their ephemeral answers come first, one per busy thread.
            before = len(fake.ephemerals(user=MALLORY))
            for _ in range(12):
                sender.click(MALLORY, channel_id=PROD_CHANNEL, message=shown, action_id="checklist:rollback_plan")
            wait_until(lambda: len(fake.ephemerals(user=MALLORY)) - before >= 4)
            wait_until(lambda: any(c.status == 429 for c in fake.calls_to("chat.postMessage")
                                   + fake.calls_to("chat.update")))
            clicked = time.time()
            assert sender.click(CAROL, channel_id=PROD_CHANNEL, message=shown, action_id="waive").status_code == 200
            opened = wait_until(lambda: [c for c in fake.calls_to("views.open") if c.at >= clicked], timeout=5)
            assert opened[0].ok, opened[0].response  # the trigger_id had not expired
            assert opened[0].at - clicked <= 2.0 * load_factor(), opened[0].at - clicked
            modal = fake.top_modal(CAROL)
            assert modal is not None and modal["callback_id"] == "waive_findings"
            assert not [c for c in fake.calls_to("chat.update") if c.at >= clicked and c.ok]  # posts were held
        finally:
            fake.clear_faults()
        assert world["store"].get(run_id).facts.waivers == {}  # opening the form changed nothing
