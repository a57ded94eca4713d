# syntax=docker/dockerfile:1
# The gateway image: tether-server and the tether CLI (its `health` command is the
# HEALTHCHECK), built from this checkout. Not built on the CI machine (no Docker engine
# there): see README.md, "Install".
#   docker build -t tether-server .
#   docker run --rm -p 8080:8080 -e JWT_SECRET=$(openssl rand -hex 32) \
#     -e ADMIN_API_KEY=$(openssl rand -hex 16) tether-server
# Settings are environment variables (README.md, "Running the gateway").

# Builder: the same Debian release as the runtime, so the binaries find its glibc.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p tether-server -p tether-cli \
    && install -D -m 0755 target/release/tether-server /out/tether-server \
    && install -D -m 0755 target/release/tether /out/tether \
    && strip /out/tether-server /out/tether

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tether \
    && useradd --system --uid 10001 --gid tether --home-dir /var/lib/tether --create-home --shell /usr/sbin/nologin tether
COPY --from=builder /out/tether-server /out/tether /usr/local/bin/

# Listen on every interface of the container; JSON logs for a log pipeline. JWT_SECRET
# (or JWT_PUBLIC_KEY_FILE) and ADMIN_API_KEY have no default: start-up refuses without a
# JWT key. Without REDIS_URL the node runs on its embedded broker (one node, nothing
# survives a restart).
ENV TETHER_BIND=0.0.0.0:8080 \
    LOG_FORMAT=json \
    RUST_LOG=info \
    SHUTDOWN_TIMEOUT=10000 \
    TETHER_URL=http://127.0.0.1:8080
EXPOSE 8080
USER tether
WORKDIR /var/lib/tether
# `tether health`: GET /health, exit 0 only for 200 {"status":"healthy"} (503 when the
# broker is unreachable).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["tether", "health"]
# SIGTERM: stop accepting, close every connection with 1012, exit 0 within SHUTDOWN_TIMEOUT.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tether-server"]
