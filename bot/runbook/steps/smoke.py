"""Seed step 6: the smoke tests, a chain of HTTP probes against the deployed app."""

from __future__ import annotations

from bot.config import SmokeProbe
from bot.errors import IntegrationError
from bot.integrations.smoke import SmokeResult, run_smoke_probes
from bot.runbook.engine import (
    StepContext,
    StepOutcome,
)
from bot.runbook.rules import RollbackSmokeResult, SmokeCheckResult, SmokeTestsResult


def smoke(ctx: StepContext) -> StepOutcome:
    """Seed step 6: the configured chain of HTTP probes; any failure fails the run."""
    # During a webhook maintenance window the app answers 503 to everyone but operators holding the token.
    extra_headers: dict[str, str] = {}
    maint = ctx.env.maintenance
    if (maint.enabled and maint.method == "webhook" and maint.webhook_token
            and any(s.name == "maintenance_on" and s.status.value == "succeeded" for s in ctx.run.steps)):
        extra_headers["X-Maintenance-Token"] = maint.webhook_token
    summary, results = _probe(ctx, "*Smoke tests*", extra_headers)
    return StepOutcome(summary, SmokeTestsResult(checks=results))


def smoke_after_rollback(ctx: StepContext) -> StepOutcome:
    """The last sub-step of every way back: the same probes, as any user reaches the site (no maintenance token)."""
    summary, results = _probe(ctx, "*Smoke tests after the rollback*", {})
    return StepOutcome(summary, RollbackSmokeResult(checks=results))


def _probe(ctx: StepContext, heading: str, extra_headers: dict[str, str]) -> tuple[str, list[SmokeCheckResult]]:
    """Run the environment's probes, post each result in the thread; IntegrationError when any failed."""
    probes: list[SmokeProbe] = list(ctx.env.smoke)
    lines: list[str] = []

    def on_result(result: SmokeResult) -> None:
        if getattr(result, "skipped", False):
            lines.append(f"⏭️ {result.name}: skipped (an earlier check failed)")
            return
        mark = "✅" if result.ok else "❌"
        lines.append(f"{mark} {result.name}: {result.status or '-'} in {result.latency_ms:.0f} ms"
                     + (f" — {result.error}" if result.error else ""))

    # smoke_id is new for every smoke run (a Retry, the check after a rollback), so a probe that creates a user
    # with it does not collide with the one an earlier run of the same run created.
    attempt = ctx.run.step(ctx.step_name).attempt
    variables = {"run_id": ctx.run.id, "smoke_id": f"{ctx.run.id}-{ctx.step_name.replace('_', '-')}-{attempt}"}
    report = run_smoke_probes(probes, variables=variables, on_result=on_result,
                              extra_headers=extra_headers)
    ctx.thread(heading + "\n" + "\n".join(lines))
    results = [SmokeCheckResult(name=r.name, ok=r.ok, status=r.status, latency_ms=round(r.latency_ms, 1),
                                error=r.error) for r in report.results]
    if not report.ok:
        raise IntegrationError(f"Smoke tests failed: {report.summary()}")
    return report.summary(), results
