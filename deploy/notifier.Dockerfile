# syntax=docker/dockerfile:1
# The Vigil notifier service image. Build context: the repository root, e.g.
#   docker build -f deploy/notifier.Dockerfile -t vigil-notifier .
# Each module builds on its own (GOWORK=off): its go.mod replaces
# github.com/vigilhq/vigil/pkg with a path inside the repository.

FROM golang:1.26-bookworm AS build
ENV CGO_ENABLED=0 GOWORK=off
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    cd services/notifier && go build -trimpath -ldflags="-s -w" -o /out/notifier ./cmd/notifier
# The runtime image has no shell or wget: compose's healthcheck runs this.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    cd deploy && go build -trimpath -ldflags="-s -w" -o /out/healthcheck ./healthcheck

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/notifier /out/healthcheck /
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/notifier"]
