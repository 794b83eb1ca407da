"""Schedules: periodic jobs stored in PostgreSQL and fired exactly once per fire time by the
tick that every API and worker process runs (core.lifecycle.recovery)."""
