"""HTTP routes, one module per area: ops (health, readiness, metrics, model), predict, batch, jobs, gui."""

from __future__ import annotations

from service.routes import batch, gui, jobs, ops, predict

__all__ = ["batch", "gui", "jobs", "ops", "predict"]
