"""A Django project that knows its users from Ory (see docs/embedding.md)."""
