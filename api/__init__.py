"""Conveyor's HTTP side: FastAPI app factory, routes, schemas, middleware. Imports core, never
jobs (jobs are dispatched by task name through ``core.broker.publisher``)."""
