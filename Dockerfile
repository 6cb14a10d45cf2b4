# lifeboat container image (for `lifeboat drill cronjob`). Not built or tested on the
# development machines (no container engine there); build with: docker build -t lifeboat .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin lifeboat

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/lifeboat /usr/local/bin/lifeboat
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/lifeboat"]
