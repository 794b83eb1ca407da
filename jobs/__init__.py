"""Conveyor's Celery side: the app, the job runner and the job bodies. Imports core, never api."""
