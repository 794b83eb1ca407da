"""The job lifecycle: states, commands (every state change, fenced), queries, outbox, events."""
