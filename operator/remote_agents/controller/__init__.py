"""The operator: Kopf handlers, the pure decision layer and the E2B gateway."""
