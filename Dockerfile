# The imocha_pipeline code location as a container image: a Dagster code server on port 4000.
# Used by the Helm chart's user deployment (deploy/helm-values.yaml) and, through the K8sRunLauncher, for every
# run's pod. The install steps are deploy/install.sh, which CI runs into a fresh venv (test_deploy.py).
#
#   docker build -t imocha-pipeline:0.1.0 .
#   docker run --rm -p 4000:4000 --env-file .env imocha-pipeline:0.1.0
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IMOCHA_PIPELINE_VENV=/opt/venv \
    DAGSTER_HOME=/opt/dagster/dagster_home

WORKDIR /opt/dagster/app
COPY pyproject.toml setup.py README.md ./
COPY imocha_pipeline ./imocha_pipeline
# The simulators: `imocha-pipeline sandbox` and `demo` work in the image too.
COPY imocha_sandbox ./imocha_sandbox
COPY deploy ./deploy
# gcc builds the diff engine's compiled part (setup.py) and is removed again; without it the install still
# succeeds and the engine plans on one core.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && sh deploy/install.sh /opt/dagster/app \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/* \
    && rm -rf /root/.cache/pip \
    && mkdir -p "$DAGSTER_HOME" \
    && cp deploy/dagster.yaml "$DAGSTER_HOME/dagster.yaml" \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin dagster \
    && chown -R dagster "$DAGSTER_HOME"

ENV PATH=/opt/venv/bin:$PATH
USER dagster
EXPOSE 4000
# The Helm chart's readiness probe: dagster api grpc-health-check -p 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "imocha_pipeline.definitions"]
