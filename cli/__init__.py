"""The ``conveyor`` command. Imports core only; starts the API and workers as processes."""
