# One image for the API and the workers.
#   docker compose up --build --scale worker=4
# Build args: TORCH=1 adds PyTorch (for examples/pytorch_mnist_like.py; the CUDA wheels work on
# GPU hosts with the NVIDIA container toolkit), TORCH_INDEX picks the wheel index.
FROM python:3.11-slim

ARG TORCH=0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu121

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY tuner ./tuner
COPY api ./api
COPY migrations ./migrations
COPY examples ./examples
# Editable: the Alembic revisions in /app/migrations stay beside the package that runs them.
RUN pip install -e . \
 && if [ "$TORCH" = "1" ]; then pip install torch --index-url "$TORCH_INDEX"; fi \
 && useradd --create-home --uid 1000 tuner \
 && mkdir -p /checkpoints && chown tuner /checkpoints
USER tuner

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')" || exit 1
CMD ["tuner", "server", "--host", "0.0.0.0", "--port", "8000"]
