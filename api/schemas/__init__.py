"""Request and response models, one module per routes module. Never ORM objects: every
response is built from ORM attributes explicitly, so a new column is never exposed by accident."""
