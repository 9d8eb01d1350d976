"""The remoteagents.io API: typed models and the CRDs generated from them."""
