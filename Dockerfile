# The tikv-operator image: a static-ish Rust binary on a distroless, non-root runtime.
#
#   docker build -t <registry>/tikv-operator:0.1.0 .
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
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tikv-operator"]
CMD ["run"]
