"""Pure and deterministic: the ownership model, transition tables, replicated appliers, planner."""
