// Package driver is the docker-tcp executor plugin: it builds with the
// classic builder of a remote Docker daemon (tcp:// with optional TLS, or
// unix://), or with the daemon's BuildKit when host.buildkit is set, and
// pushes the result to the registry from that daemon. The ssh-docker
// plugin reuses it over its own transport.
//
// # Tenants on a shared host
//
// One Docker host builds for many fleets. What one job pulls or builds must
// not become usable by another job through the host's image store
// (tenancy.go, pull.go, build.go):
//
//   - Images of the openBalena registry (the registry of the job's
//     image_ref) are pulled with the job's own registry token, which the
//     registry scopes to the job's own repository: by the classic builder
//     and pull_image through X-Registry-Auth/-Config, by BuildKit through
//     the session's token authority (session.go). Another fleet's image
//     cannot be pulled, and a failed pull never falls back to a copy on the
//     host.
//   - A build pulls its base images fresh (PullParent; pull=1 for BuildKit
//     too) when an image its Dockerfile takes from (FROM, COPY --from,
//     RUN --mount from=) is on the openBalena registry or on a registry the
//     job has credentials for (registry secrets), cannot be resolved
//     (FROM $VAR with no value: it may be either), looks like an image id,
//     is held by another build in progress of this plugin, is not on the
//     host (it is pulled anyway), or has ONBUILD triggers that take from
//     another image. The Dockerfile is read from the head of the build
//     context (ingest sends it first), which is buffered only that far.
//   - A pull_image falls back to the host's copy only when its registry
//     could not be reached at all (the offline case), only to an image of
//     that very name, never after the registry answered, and never for
//     those registries or a name that looks like an image id. The build's
//     log says which case it was.
//   - After the job (success, failure or cancel), its tags are removed in a
//     context of their own: the built image_ref:latest (with its digest
//     reference) after the push, the pulled pull_image and the private base
//     images the classic builder pulled fresh as soon as they are no longer
//     needed. Base images the job did not pull stay. A classic-builder
//     image stays for the layer cache under a name made of its own id
//     (obb-cache/<id>), which nobody can know without having the image;
//     `docker image prune -a` on the host reclaims the space.
//
// # What the host still shares: the layer cache
//
// Found by building and listing the daemon (dockerd 20.10, overlay2 image
// store) after jobs of both builders:
//
// The classic builder leaves an untagged intermediate image for every
// step (`docker images -a`: <none>:<none>, chained by parent id), each with
// the layers up to that step, and the private base images it pulled stay
// as their parents, untagged. Its cache takes a step's image when it is a
// child of the same parent image id with the same instruction (COPY and ADD
// record the checksum of the copied content in it): a hit gives a job only
// the image it would have built itself from a parent it could already
// name. The gap was the daemon's lookup by id: a FROM, a COPY --from, an
// ONBUILD trigger's COPY --from or an image inspect that names no tag is
// resolved as an image id prefix of any length ("FROM 5"), which reached
// any image on the host, intermediate ones included. The driver therefore
// never lets a name that looks like an id, or a trigger it cannot see, be
// looked up on the host (the build pulls fresh and the daemon then asks a
// registry for that name), and takes pull_image's host copy by name only.
//
// BuildKit tags nothing but the image it exports: base images it pulls
// live in its own cache records ("from local <name>@<digest>", "mount /
// from exec …", "fileop target"; `docker buildx du`), keyed by digests of
// the base image's manifest and of each step and its inputs. It resolves a
// FROM by name only, through a registry (pull=1) or the image store's tags,
// never by id, so reaching a record needs the base resolved through a
// registry that lets the job have it.
//
// One window is left: while a classic build runs, the private base image
// it pulled is tagged on its host; another plugin process building on the
// same host at that moment, for a job naming it without credentials, could
// use it. Builds of this plugin process pull such a name fresh (see hold).
package driver
