"""A local server that the unmodified `e2b` Python SDK cannot tell from E2B.

One port serves both the control-plane REST API and every sandbox's envd (requests carrying
an `E2b-Sandbox-Id` header). Sandboxes are process trees in per-sandbox directories; see
docs/e2b-local.md for what is emulated and how.
"""
