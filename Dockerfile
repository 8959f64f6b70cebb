# The qudag-node image: one node daemon, its data in /data, its API on 8080 and its
# peer port on 7000.
#
#   podman build --format docker -t qudag-node .        (or: docker build -t qudag-node .)
#
# BASE_IMAGE is the official slim Python image on Debian trixie, which Fly's builder
# pulls. Trixie's OpenSSL (3.5) offers the hybrid post-quantum key exchange
# X25519MLKEM768 first in TLS 1.3, so the peer links get it with no setting; bookworm's
# (3.0) has no ML-KEM. Any trixie image with python3 (3.11 or newer, with venv and pip)
# works too, e.g. one made by scripts/local-base-image.sh for machines without registry
# access (its python3 is Debian's 3.13). Build with --format docker under podman: the
# OCI format has no HEALTHCHECK.
ARG BASE_IMAGE=python:3.12-slim-trixie

# --- builder: the locked dependencies in /opt/venv, the node itself in /app -----------
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
# pip runs from a venv of its own and installs into /opt/venv, which gets no pip: the
# image never installs anything at run time.
RUN python3 -m venv /opt/pip \
    && python3 -m venv --without-pip /opt/venv
# Every dependency pinned and checked against its hash; nothing else is resolved.
COPY requirements.lock /src/requirements.lock
RUN /opt/pip/bin/pip --python /opt/venv/bin/python install --require-hashes --no-deps \
        -r /src/requirements.lock
COPY pyproject.toml README.md /src/
COPY qudag_node /src/qudag_node
# The node's own files go under /app (as /app/opt/venv/...), apart from the dependencies,
# so a change to the code makes a new layer of a few hundred kB, not one of the whole
# venv. pip fetches the build backend (setuptools) for this step into a throwaway build
# environment.
RUN /opt/pip/bin/pip --python /opt/venv/bin/python install --no-deps --root /app /src

# --- runtime: the venv, a non-root user and /data --------------------------------------
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="qudag-node" \
      org.opencontainers.image.description="QuDAG testnet node" \
      org.opencontainers.image.licenses="Apache-2.0"
# The openssl program stays in the image: operators inspect the peer port's TLS with it
# (`openssl s_client -connect 127.0.0.1:7000 -tls1_3 -brief -no-interactive`, see
# docs/deploy.md). Debian images have it as a dependency of ca-certificates; a base
# without it gets it here.
RUN command -v openssl >/dev/null \
    || (apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssl \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb)
RUN groupadd --gid 10001 qudag \
    && useradd --no-log-init --uid 10001 --gid qudag --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin qudag \
    && mkdir /data \
    && chown qudag:qudag /data \
    && chmod 0750 /data
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app/ /
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/qudag-entrypoint
ENV QUDAG_DATA_DIR=/data \
    QUDAG_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# No VOLUME: Fly ignores it (a volume is mounted at /data by fly.toml's [mounts]), and
# under podman or docker it would give every `run` without -v a new anonymous volume
# that nobody removes. Mount a named volume at /data to keep the node's data.
EXPOSE 8080 7000
# The node stops cleanly on SIGTERM; exec form throughout, so the daemon is PID 1 and
# receives it directly.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % (os.environ.get('QUDAG_API_PORT') or '8080'), timeout=4)"]
ENTRYPOINT ["/usr/local/bin/qudag-entrypoint"]
CMD ["qudag-node", "run"]
