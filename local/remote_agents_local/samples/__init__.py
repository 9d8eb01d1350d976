"""Files of the sample agent that `remote-agents up` serves from a local git repository."""
