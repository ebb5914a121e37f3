"""Exact RTRL for the selective SSM's recurrent core (placeholder; being written)."""


def ssm_handlers(rule, model) -> list:
    """Return RTRL handlers for every SelectiveSSM in ``model`` (none until implemented)."""
    return []
