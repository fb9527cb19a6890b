"""``fdflare serve``: the forecast service (scheduler, flare list, API, dashboard, replay)."""
