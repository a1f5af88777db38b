# Builds growth-collector and growth-aggregator into one small image.
# Used by docker-compose.yml; the binaries take all settings from flags or GROWTH_* env.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p growth-collector -p growth-aggregator

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/growth-collector /src/target/release/growth-aggregator /usr/local/bin/
USER nobody
