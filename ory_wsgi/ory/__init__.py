"""Everything that speaks to Ory: the whoami and logout calls, and the session cache."""
