# Puts the linkgate binary into a migration image, so that the migration
# container can run `linkgate wait` before it starts (sidecar-pod.yaml).
#
#   docker build -f deploy/kubernetes/migration-image.Dockerfile \
#     --build-arg LINKGATE_IMAGE=registry.example.com/linkgate/linkgate:v0.1.0 \
#     --build-arg MIGRATION_IMAGE=registry.example.com/migration/hyper2kvm:v1.0.0 \
#     -t registry.example.com/migration/hyper2kvm-linkgate:v0.1.0 .
#
# linkgate is a static binary, so it runs in any Linux image of the same
# architecture.
ARG LINKGATE_IMAGE
ARG MIGRATION_IMAGE

FROM ${LINKGATE_IMAGE} AS linkgate

FROM ${MIGRATION_IMAGE}
COPY --from=linkgate /linkgate /usr/local/bin/linkgate
