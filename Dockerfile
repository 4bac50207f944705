# syntax=docker/dockerfile:1
# The `deploy` binary in a minimal image, for `deploy watch` in the cluster (deploy/).
#
#   docker build -t ghcr.io/example/deploy:0.1.0 .
#
# The builder's Rust is the workspace's rust-version (Cargo.toml); a test keeps them equal.
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build between image builds (BuildKit); the
# binary is copied out of the cached target directory, which is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked -p deploy-cli \
    && cp target/release/deploy /usr/local/bin/deploy

# glibc and libgcc for the Rust binary (the builder is Debian 12 too, so they match), and
# ca-certificates: the ECR client trusts the system store (/etc/ssl/certs); the Kubernetes
# client trusts the cluster CA from the service account. No shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/deploy /deploy
# distroless's "nonroot", numeric so that Kubernetes' runAsNonRoot can verify it; the uid
# deploy/deployment.yaml runs as.
USER 65532:65532
ENTRYPOINT ["/deploy"]
