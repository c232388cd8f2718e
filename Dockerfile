# The agent as a static, non-root container image:
#   docker build -t shipper:dev --build-arg VERSION=$(git describe --always) .
# deploy/deploy_test.go checks this file against the Makefile and go.mod.

# The Go version of go.mod, so the build needs no toolchain download.
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first: this layer is reused while only the code changes.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# The flags of `make build`: no cgo, so the binary needs no libc and runs
# on the static base below; -trimpath keeps build paths out of it.
RUN CGO_ENABLED=0 go build -trimpath \
    -ldflags "-X github.com/shipper-agent/shipper/agent.Version=${VERSION}" \
    -o /out/shipper ./cmd/shipper

# No shell or package manager; CA certificates (to verify Elasticsearch and
# Kafka TLS) and /etc/passwd entries for the nonroot user are included.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/shipper /usr/local/bin/shipper
# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd;
# the same UID as daemonset.yaml and its buffer directory.
USER 65532:65532
# The API (health probes, metrics, flush).
EXPOSE 8686
ENTRYPOINT ["/usr/local/bin/shipper"]
CMD ["run", "-config", "/etc/shipper/shipper.hcl"]
