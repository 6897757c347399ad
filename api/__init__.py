"""The REST service of tuner: FastAPI routes over the coordinator (see ``api.main``)."""
