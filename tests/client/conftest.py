from tests.worker.live import server_factory, shared_server

__all__ = ["server_factory", "shared_server"]
