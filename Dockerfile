# The tikv-operator image: a glibc-linked Rust binary on a distroless, non-root runtime.
#
#   docker build -t <registry>/tikv-operator:0.1.0 .
#
# Without a registry, `cargo xtask image` builds the same image with buildah (binary, glibc,
# libgcc, loader, CA bundle, passwd entry for uid 65532; no shell) and checks it. Its user,
# entrypoint, command, labels and exposed ports are compared with this file by a unit test
# (xtask/src/image.rs), so change both together.
#
# Build stage: the whole workspace is copied (cargo needs every member's manifest), only the
# `tikv-operator` package is compiled. No system protoc or OpenSSL is needed (protobuf files are
# compiled with protox, TLS is rustls).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tikv-operator \
 && install -D -m 0755 target/release/tikv-operator /out/tikv-operator

# Runtime: glibc and libgcc only, no shell, no package manager; runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tikv-operator /usr/local/bin/tikv-operator
LABEL org.opencontainers.image.title="tikv-operator" \
      org.opencontainers.image.description="Runs TiKV clusters (PD + TiKV) on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tikv-operator"]
CMD ["run"]
