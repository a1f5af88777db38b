# Builds growth-collector and growth-aggregator into one small image.
# Used by docker-compose.yml; the binaries take all settings from flags or GROWTH_* env.
#
# What the image keeps lives under its data directory /var/lib/growth, owned by the
# user the binaries run as (nobody), which is also the working directory:
#   /var/lib/growth/spool  the collector's write-ahead spool and dead-letter.jsonl
#                          (acknowledged events not yet in ClickHouse: back it up)
#   /var/lib/growth/state  the aggregator's day cache (safe to delete)
# Both are volumes; docker-compose.yml mounts a named volume on each. A fresh named
# volume takes the owner of the directory here, so nobody can write to it. A bind
# mount must be made writable for uid 65534 by hand.
# tests/tests/docker_image.rs reads this file and fails when it and the compose file
# drift apart.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p growth-collector -p growth-aggregator

FROM debian:bookworm-slim
# curl: the compose health checks (GET /readyz).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /var/lib/growth/spool /var/lib/growth/state && chown -R nobody:nogroup /var/lib/growth
COPY --from=build /src/target/release/growth-collector /src/target/release/growth-aggregator /usr/local/bin/
ENV GROWTH_SPOOL_DIR=/var/lib/growth/spool \
    GROWTH_STATE_DIR=/var/lib/growth/state
WORKDIR /var/lib/growth
VOLUME ["/var/lib/growth/spool", "/var/lib/growth/state"]
USER nobody
