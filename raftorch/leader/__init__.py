"""Leader-side work: the leader loop, lease tracking and renewal barriers, reporting."""
