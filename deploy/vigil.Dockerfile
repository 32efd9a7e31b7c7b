# syntax=docker/dockerfile:1
# The vigil CLI image (keys, migrate, bench, dev). Build context: the
# repository root, e.g.
#   docker build -f deploy/vigil.Dockerfile --build-arg VERSION=v0.1.0 -t vigil .
# Each module builds on its own (GOWORK=off): its go.mod replaces
# github.com/vigilhq/vigil/pkg with a path inside the repository.

FROM golang:1.26-bookworm AS build
ARG VERSION=dev
ENV CGO_ENABLED=0 GOWORK=off
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    cd cmd/vigil && go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/vigil .
# The runtime image has no shell or wget: compose's healthcheck runs this.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    cd deploy && go build -trimpath -ldflags="-s -w" -o /out/healthcheck ./healthcheck

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/vigil /out/healthcheck /
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/vigil"]
