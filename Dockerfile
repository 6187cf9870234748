# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/mailproxy ./cmd/mailproxy
RUN mkdir -p /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mailproxy /usr/local/bin/mailproxy
# IMAP over Graph keeps UIDs under $STATE_DIRECTORY/graph: mount a volume here.
COPY --from=build --chown=65532:65532 /out/state /var/lib/mailproxy
ENV STATE_DIRECTORY=/var/lib/mailproxy
VOLUME /var/lib/mailproxy
USER nonroot:nonroot
# As a sidecar, listen on the pod's loopback; see README "Running in a container".
ENTRYPOINT ["/usr/local/bin/mailproxy"]
CMD ["serve", "-config", "/etc/mailproxy/mailproxy.yaml"]
