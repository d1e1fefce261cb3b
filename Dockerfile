# syntax=docker/dockerfile:1
# Lasso: release image for Fly.io Machines (deployment/README.md) or any container runtime.
#   docker build -t lasso .
#   docker run -p 4000:4000 -v lasso_data:/data lasso
# Stages: chef (cargo-chef) -> planner (dependency recipe) -> builder (cached dependency layer, then the binary)
#         -> runtime (debian slim, non-root, /data volume).
# I/O: Lasso uses io_uring when the kernel allows it (Fly's Firecracker kernels do) and falls back to epoll
# otherwise, e.g. under Docker's default seccomp profile, which blocks io_uring. LASSO_DRIVER=legacy forces epoll.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# Dependencies only: this layer is rebuilt when Cargo.toml/Cargo.lock change, not on every source edit.
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked -p lasso --bin lasso --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p lasso --bin lasso \
    && install -D -m 0755 target/release/lasso /out/lasso \
    && /out/lasso check-config config/chains.yml

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: Lasso embeds webpki roots, but upstream.extra_ca_file and operators' tools use the system store.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 lasso \
    && useradd --system --uid 10001 --gid lasso --home-dir /app --no-create-home --shell /usr/sbin/nologin lasso \
    && mkdir -p /data/benchmark_snapshots /data/config_backups \
    && chown -R lasso:lasso /data
WORKDIR /app
COPY --from=builder /out/lasso /usr/local/bin/lasso
COPY config/chains.yml /app/config/chains.yml
COPY deployment/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

ENV PORT=4000 \
    LOG_FORMAT=json \
    LASSO_DATA_DIR=/data \
    LASSO_CHAINS_PATH=/data/chains.yml \
    LASSO_DEFAULT_CHAINS_PATH=/app/config/chains.yml \
    LASSO_SNAPSHOTS_DIR=/data/benchmark_snapshots \
    LASSO_BACKUP_DIR=/data/config_backups

# Writable state: chains.yml (seeded from /app/config/chains.yml), snapshots, config backups. On Fly a volume is
# mounted here (owned by the image's USER); elsewhere a named volume inherits the lasso ownership set above.
VOLUME ["/data"]
EXPOSE 4000
# Lasso drains in-flight requests on SIGINT (server.drain_timeout_ms, 30 s); fly.toml uses kill_timeout = 30.
STOPSIGNAL SIGINT
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["lasso"]
