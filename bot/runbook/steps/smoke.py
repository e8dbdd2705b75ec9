"""Seed step 6: the smoke tests, a chain of HTTP probes against the deployed app."""

from __future__ import annotations

from bot.config import SmokeProbe
from bot.errors import IntegrationError
from bot.integrations.smoke import SmokeResult, run_smoke_probes
from bot.runbook.engine import (
    StepContext,
    StepOutcome,
)
from bot.runbook.rules import SmokeCheckResult, SmokeTestsResult


def smoke(ctx: StepContext) -> StepOutcome:
    """Seed step 6: the configured chain of HTTP probes; any failure fails the run."""
    probes: list[SmokeProbe] = list(ctx.env.smoke)
    lines: list[str] = []

    def on_result(result: SmokeResult) -> None:
        if getattr(result, "skipped", False):
            lines.append(f"⏭️ {result.name}: skipped (an earlier check failed)")
            return
        mark = "✅" if result.ok else "❌"
        lines.append(f"{mark} {result.name}: {result.status or '-'} in {result.latency_ms:.0f} ms"
                     + (f" — {result.error}" if result.error else ""))

    # During a webhook maintenance window the app answers 503 to everyone but operators holding the token.
    extra_headers: dict[str, str] = {}
    maint = ctx.env.maintenance
    if (maint.enabled and maint.method == "webhook" and maint.webhook_token
            and any(s.name == "maintenance_on" and s.status.value == "succeeded" for s in ctx.run.steps)):
        extra_headers["X-Maintenance-Token"] = maint.webhook_token
    report = run_smoke_probes(probes, variables={"run_id": ctx.run.id}, on_result=on_result,
                              extra_headers=extra_headers)
    ctx.thread("*Smoke tests*\n" + "\n".join(lines))
    results = [SmokeCheckResult(name=r.name, ok=r.ok, status=r.status, latency_ms=round(r.latency_ms, 1),
                                error=r.error) for r in report.results]
    if not report.ok:
        raise IntegrationError(f"Smoke tests failed: {report.summary()}")
    return StepOutcome(report.summary(), SmokeTestsResult(checks=results))
