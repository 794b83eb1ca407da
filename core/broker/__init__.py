"""Talking to Redis: publisher, relay, circuit breaker, clients, broker epoch, queue depth."""
