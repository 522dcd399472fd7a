# s3p image: built by docker-compose.yml (`docker compose up --build`) or `docker build -t s3p .`.
# The image holds the `s3p` binary only (plus Debian's CA certificates, for https backends): the
# configuration is mounted at /etc/s3p/proxy.yaml and its secrets come from environment variables at run
# time, never from the image. .dockerignore keeps everything but Cargo.toml, Cargo.lock and src/ out.

# ---- build ----
FROM rust:1.95.0-slim-bookworm AS build
# pingora's zlib-ng (libz-ng-sys) is built with cmake; the rust image already has gcc and libc6-dev.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin s3p \
 && cp target/release/s3p /usr/local/bin/s3p

# ---- run ----
FROM debian:12.12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin s3p
COPY --from=build /usr/local/bin/s3p /usr/local/bin/s3p
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/s3p"]
CMD ["--config", "/etc/s3p/proxy.yaml"]
