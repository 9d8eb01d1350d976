"""remote-agents on one machine: e2b-local, a real control plane built from source, and `remote-agents up`."""
