"""A local stand-in for the OpenAI API (`/v1/responses`, `/v1/chat/completions`) with scripted,
deterministic replies: what agents of Dexter's shape answer through in tests and `remote-agents up`."""
