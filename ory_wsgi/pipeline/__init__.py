"""The one decision pipeline (SPEC §16): match rule -> authenticators -> authorizer -> mutators.

The proxy, the decisions endpoint and the embedded middleware run it alike; they
differ only in what they do with its `Decision` (forward, answer 200, call the app).
"""
