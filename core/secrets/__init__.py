"""Secrets: encrypted at rest (Fernet, key rotation), resolved by name in workers, redacted."""
