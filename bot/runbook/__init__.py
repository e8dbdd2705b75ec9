"""A run from `/migrate prod` to "looks good": rules, permissions, the step engine and every operation."""
