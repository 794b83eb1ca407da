"""Deployments: the request spec, inventory, limits (global cap, per-target lock), retry."""
