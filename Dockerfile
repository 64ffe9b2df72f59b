# One image for every ganhpo service: `study create`, `worker`, `dashboard` (docker-compose.yml).
#   docker build -t ganhpo .                        # CPU PyTorch (the default)
#   docker build -t ganhpo:cuda \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .   # a CUDA build
FROM python:3.11-slim

# The PyTorch build: the CPU wheels by default; point the index at a CUDA one for GPU workers.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GANHPO_ARTIFACTS=/artifacts \
    GANHPO_DATA_DIR=/data \
    GANHPO_CACHE_DIR=/cache

# torch first, in its own layer: it is large and changes less often than ganhpo.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ganhpo ./ganhpo
RUN pip install ".[dashboard,s3]"
COPY studies ./studies

# Not root; the volumes' mount points belong to the user, so fresh named volumes do too.
RUN useradd --create-home --uid 1000 ganhpo \
    && mkdir -p /artifacts /data /cache \
    && chown ganhpo:ganhpo /artifacts /data /cache
USER ganhpo

CMD ["ganhpo", "--help"]
