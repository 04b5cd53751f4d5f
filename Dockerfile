# syntax=docker/dockerfile:1
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg BRANCH=$(git rev-parse --abbrev-ref HEAD) -t linkgate .
#   docker run --rm -p 9977:9977 linkgate            # linkgate sidecar
#   docker run --rm linkgate version
#
# There is no HEALTHCHECK: the final image has no shell or curl. Orchestrators
# probe /healthz and /ready over HTTP; elsewhere, `linkgate check` or
# `linkgate wait --url http://localhost:9977/ready` do the same from the binary,
# e.g. HEALTHCHECK CMD ["/linkgate", "wait", "--url", "http://localhost:9977/ready", "--timeout", "5s"]
# (wait accepts only the gate's answer: pointed at /healthz it fails).

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
# Version information for `linkgate version` and linkgate_build_info, set in
# github.com/prometheus/common/version (which main uses), e.g.
#   --build-arg VERSION=$(git describe --tags --always) \
#   --build-arg REVISION=$(git rev-parse HEAD) \
#   --build-arg BRANCH=$(git rev-parse --abbrev-ref HEAD) \
#   --build-arg BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ARG VERSION=dev
ARG REVISION
ARG BRANCH
ARG BUILD_DATE
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -o /out/linkgate \
      -ldflags "-s -w \
        -X github.com/prometheus/common/version.Version=${VERSION} \
        -X github.com/prometheus/common/version.Revision=${REVISION} \
        -X github.com/prometheus/common/version.Branch=${BRANCH} \
        -X github.com/prometheus/common/version.BuildDate=${BUILD_DATE} \
        -X github.com/prometheus/common/version.BuildUser=docker" \
      ./cmd/linkgate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/linkgate /linkgate
# nonroot is uid/gid 65532 in the distroless image. Kubernetes' runAsNonRoot
# can only verify a numeric USER, so manifests also set runAsUser: 65532.
USER nonroot
EXPOSE 9977
ENTRYPOINT ["/linkgate"]
CMD ["sidecar"]
