"""``schedgen serve``: the precompute service (HTTP), being written for issue 18."""
