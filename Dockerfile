# The `kiln` binary in a small image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p kiln-cli

FROM debian:bookworm-slim
COPY --from=build /src/target/release/kiln /usr/local/bin/kiln
ENTRYPOINT []
CMD ["kiln", "--help"]
