"""Conveyor's shared domain and infrastructure; imports neither ``api`` nor ``jobs``."""
