# Multi-stage build of the operator (and the emulator, for demos). Not built in CI: this
# machine kind has no container engine.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --bin oos-chat-operator --bin oos-emulator --bin crdgen

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/oos-chat-operator /usr/local/bin/oos-chat-operator
COPY --from=build /src/target/release/oos-emulator /usr/local/bin/oos-emulator
USER nonroot
ENTRYPOINT ["/usr/local/bin/oos-chat-operator"]
