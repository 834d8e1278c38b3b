# The harness tools for docker-compose, one binary: `mesh` (certificates,
# backends, and `mesh check`, the end-to-end checks the test driver runs).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p integration-tests --bin mesh

FROM debian:bookworm-slim
COPY --from=build /src/target/release/mesh /usr/local/bin/mesh
