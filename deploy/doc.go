// Package deploy is Vigil's container deployment: compose.yaml, one
// Dockerfile per image, and the tests that check them without a Docker
// daemon (the compose-spec loader, and a small Dockerfile reader). The
// healthcheck command is the HTTP probe the distroless images carry.
package deploy
