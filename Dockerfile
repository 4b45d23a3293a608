# Build the release binary, then run it as a non-root user with the example config.
FROM rust:1-bookworm AS build
WORKDIR /src
# The workspace: cargo loads every member's manifest and targets (the gateway's benches
# included) before it builds one.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY crates ./crates
COPY load-tests/loadgen ./load-tests/loadgen
RUN cargo build --release --locked --bin sluice

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sluice \
 && mkdir -p /var/lib/sluice && chown sluice /var/lib/sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY config/sluice.yaml /etc/sluice/sluice.yaml
# Listen on all interfaces inside the container (the example config defaults to loopback).
ENV SLUICE_DATA_ADDR=0.0.0.0:8080 \
    SLUICE_ADMIN_ADDR=0.0.0.0:8081 \
    SLUICE_STATE_DIR=/var/lib/sluice
# Runtime changes and the audit log: mount a volume here to keep them across containers.
VOLUME /var/lib/sluice
USER sluice
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve", "--config", "/etc/sluice/sluice.yaml"]
