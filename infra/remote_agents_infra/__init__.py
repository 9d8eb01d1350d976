"""The Pulumi program that installs remote-agents: one ComponentResource per concern."""
