"""The Python SDK of tuner (httpx): :class:`Client`, the job loop, and :func:`current_job`.

The lead re-exports ``Client`` and ``current_job`` from :mod:`tuner`.
"""

from tuner.client.client import DEFAULT_URL, ClaimAnswer, Client, Experiment, document_of
from tuner.client.current import current_job, job_from_env
from tuner.client.job import Decision, Job
from tuner.client.transport import RetryPolicy, error_from_response

__all__ = [
    "DEFAULT_URL",
    "ClaimAnswer",
    "Client",
    "Decision",
    "Experiment",
    "Job",
    "RetryPolicy",
    "current_job",
    "document_of",
    "error_from_response",
    "job_from_env",
]
