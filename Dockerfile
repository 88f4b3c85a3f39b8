# syntax=docker/dockerfile:1
# Images of the operator (default target) and of the OOS emulator (target `emulator`):
#   docker build -t oos-chat-operator .
#   docker build --target emulator -t oos-emulator .
# Not built in CI (this machine kind has no container engine): `make test` lints this file
# (hack/hadolint.sh) and tests/dockerfile.rs checks that exactly the paths the build stage
# COPYs form a workspace `cargo metadata --locked --offline` accepts.

# The Rust toolchain the project is developed and tested with (workspace rust-version 1.89).
FROM rust:1.95.0-bookworm AS workspace
WORKDIR /src
# Everything the workspace manifests reference: the root package (src/ and the benches/ its
# manifest declares), the member crates (crates/*, including their tests/ and benches/
# targets, which cargo checks for) and the lock.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY crates ./crates

# The cache mounts speed up rebuilds; each binary is copied out of them in the same step.
FROM workspace AS build
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p oos-chat-operator --bin oos-chat-operator \
    && install -D -m 0755 target/release/oos-chat-operator /out/oos-chat-operator

FROM workspace AS build-emulator
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p oos-emulator --bin oos-emulator \
    && install -D -m 0755 target/release/oos-emulator /out/oos-emulator

# The emulator image, for demos and tests in a cluster (never for production).
FROM gcr.io/distroless/cc-debian12:nonroot AS emulator
COPY --from=build-emulator /out/oos-emulator /usr/local/bin/oos-emulator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/oos-emulator"]

# The operator image (the default target: last stage). glibc + libgcc only (distroless cc),
# no shell, numeric non-root user so `runAsNonRoot` can verify it.
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/oos-chat-operator /usr/local/bin/oos-chat-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/oos-chat-operator"]
