"""Operator controls over Celery queues: pause and resume (control), and what each queue
holds and who consumes it (overview)."""
