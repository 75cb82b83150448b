"""The generic CLI verbs (tune, blend, submit, runs) of ``python -m pipelines``.

They sit on top: nothing in core or in a competition imports them."""
