# syntax=docker/dockerfile:1
# One image recipe for the four services. Build from the repository root,
# which holds go.mod and internal/, naming the service and its port:
#   docker build --build-arg SERVICE=order --build-arg PORT=8001 -t checkout/order:dev .
# (docker compose build does this for each service; see deploy/README.md.)
ARG GO_VERSION=1.26

# Build stage: a static binary (CGO_ENABLED=0) with the Makefile's BUILD_FLAGS,
# cross-compiled on the build host for the target platform.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-alpine AS build
ARG SERVICE
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
# The source is bind-mounted rather than copied (no layer to invalidate), and
# the module and build caches persist between builds. There is no separate
# `go mod download`: go build fetches only the modules this binary imports,
# never the test- and load-only ones (kustomize, compose-go, vegeta).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    --mount=type=bind,target=. \
    GOOS=$TARGETOS GOARCH=$TARGETARCH CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/service ./${SERVICE}
RUN mkdir -p /out/data

# Runtime: distroless static (CA certificates, tzdata, /etc/passwd, no shell,
# no package manager), as the unprivileged nonroot user (65532).
FROM gcr.io/distroless/static-debian12:nonroot
ARG SERVICE
ARG PORT
COPY --from=build /out/service /service
# A directory the service may write (the email service's record of sent
# mails, EMAIL_SENT_DIR=/var/lib/email), owned by nonroot so that a volume
# mounted there starts out writable.
COPY --from=build --chown=65532:65532 /out/data /var/lib/${SERVICE}
USER nonroot:nonroot
EXPOSE ${PORT}
# No shell or curl in the image: the binary checks its own /readyz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["/service", "healthcheck"]
ENTRYPOINT ["/service"]
