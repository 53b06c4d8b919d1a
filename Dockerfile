# The project image: API, worker, migrations and the payment-gateway sandbox (docker-compose.yml
# picks the process with `command`). Default: the API.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Sources (pyproject's packages and modules) plus the SQL migrations activities/db.py applies.
COPY pyproject.toml config.py worker.py ./
COPY domain ./domain
COPY activities ./activities
COPY workflows ./workflows
COPY starter ./starter
COPY devstack ./devstack
COPY bench ./bench
COPY migrations ./migrations

RUN pip install . \
    && useradd --system --uid 10001 --home-dir /var/lib/aftersales --shell /usr/sbin/nologin app \
    && mkdir -p /var/lib/aftersales/attachments /var/lib/aftersales/gateway \
    && chown -R app:app /var/lib/aftersales

# The processes run from /app (so migrations/ is found beside activities/); they write only
# under /var/lib/aftersales (named volumes in docker-compose.yml).
ENV ATTACHMENTS_DIR=/var/lib/aftersales/attachments

# The build id the workers run as (a version of the Worker Deployment): the git commit, passed by
# `BUILD_ID=$(git rev-parse --short HEAD) docker compose build` (the image has no .git). Without it
# the worker refuses to start rather than run two different builds under one id.
ARG BUILD_ID=""
ENV WORKER_BUILD_ID=${BUILD_ID}
USER app

EXPOSE 8000
CMD ["python", "-m", "uvicorn", "starter.api:app", "--host", "0.0.0.0", "--port", "8000"]
