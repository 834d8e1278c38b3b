# The harness tools for docker-compose: `mesh` (certificates, backends) and
# the source tree with its dependencies prebuilt, for the test driver.
FROM rust:1-bookworm
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p integration-tests --bin mesh \
 && install target/release/mesh /usr/local/bin/mesh \
 && cargo test --locked -p integration-tests --test deployment --no-run
