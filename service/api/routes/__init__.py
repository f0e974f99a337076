"""One router per resource: health, experiments, results (+ statistics)."""
