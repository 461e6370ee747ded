// Package engine is the Engine-API executor both Docker plugins are made of:
// it builds with the classic builder of a Docker daemon, or with the
// daemon's BuildKit when host.buildkit is set, and pushes the result to the
// registry from that daemon. docker-tcp (plugins/docker-tcp) uses it over
// tcp:// (optional TLS) or unix://; ssh-docker over SSH, with its own
// client (Options.NewClient). The buildkit plugin shares its registry
// credentials and Dockerfile secret rules.
//
// # Tenants on a shared host
//
// One Docker host builds for many fleets. What one job pulls or builds must
// not become usable by another job through the host (tenancy.go, pull.go,
// build.go, session.go):
//
//   - Images of the openBalena registry (the registry of the job's
//     image_ref) are pulled with the job's own registry token, which the
//     registry scopes to the job's own repository: by the classic builder
//     and pull_image through X-Registry-Auth/-Config, by BuildKit through
//     the session's token authority. Another fleet's image cannot be
//     pulled, and a failed pull never falls back to a copy on the host.
//   - The Dockerfile is read from the head of the build context (ingest
//     sends it first; only that far is buffered) before anything is built,
//     and a build whose Dockerfile cannot be read there, or is a link, is
//     refused. Every image it takes from (FROM, COPY --from, RUN --mount
//     from=) is named with global ARGs and build args substituted.
//   - Base images are pulled fresh when one of them is on the openBalena
//     registry or a registry the job has credentials for (registry
//     secrets), cannot be resolved (FROM $VAR with no value: it may be
//     either), looks like an image id, or was pulled with credentials by
//     another build in progress of this plugin (an image another build
//     pulled anonymously is public: no reason). The classic builder gets them pulled by the
//     driver itself before the build, together with those not on the host
//     (for the platform), then reads the ONBUILD triggers of every base
//     image and refuses one that takes from another image; the builder uses
//     exactly those copies (PullParent only for an unresolved name).
//     BuildKit gets PullParent (pull=1), also for a base image not on the
//     host or with such triggers.
//   - An image named by digest is granted by its registry first
//     (distribution inspect with the job's credentials), for FROM, COPY
//     --from and pull_image alike.
//   - A pull_image falls back to the host's copy only when its registry
//     could not be reached at all (the offline case), only to an image of
//     that very name, never after the registry answered, and never for
//     those registries or a name like an image id. The log says which case
//     it was.
//   - BuildKit builds get cache mounts of their own (BUILDKIT_CACHE_MOUNT_NS,
//     per build, whatever the build args say) and only Docker's Dockerfile
//     frontends (# syntax=, BUILDKIT_SYNTAX).
//   - After the job (success, failure or cancel), its tags are removed in a
//     context of their own, bounded by a timeout: the built image_ref:latest
//     (with its digest reference) after the push, the pulled pull_image and
//     the private base images the driver pulled as soon as the build is
//     over. Base images the job did not pull, and public ones, stay. A
//     classic-builder image stays for the layer cache under a name made of
//     its own full id (obb-cache/<id>), which nobody can know without having
//     the image; `docker image prune -a` on the host reclaims the space.
//
// # What the host still shares: the layer cache
//
// Found by building and listing the daemon (Debian's dockerd 20.10,
// overlay2 image store) after jobs of both builders:
//
// The classic builder leaves an untagged intermediate image for every step
// (`docker images -a`: <none>:<none>, chained by parent id), each with the
// layers up to that step; the private base images it pulled stay as their
// parents, untagged. Its cache takes a step's image when it is a child of
// the same parent image id with the same instruction (COPY and ADD record
// the checksum of the copied content in it): a hit gives a job only the
// image it would have built itself, from a parent it could name and pull.
//
// BuildKit tags nothing but the image it exports: the base images it pulls
// live in its own cache records ("from local <name>@<digest>", "mount /
// from exec …", "fileop target"; `docker buildx du`), keyed by digests of
// the base image's manifest and of each step and its inputs. It resolves a
// tag by name only, through a registry (pull=1) or the image store's tags,
// never by id.
//
// Both hold private content, and three ways reached it without a registry's
// consent; the driver closes them:
//
//   - By image id: the daemon resolves a name that is no tag on the host as
//     an image id prefix of any length ("FROM 5", "COPY --from=59753f",
//     "sha256:5975…", an ONBUILD trigger's COPY --from, an image inspect),
//     which reached any image on the host, intermediate ones included.
//   - By digest: a pull of name@sha256:… takes the manifest from the
//     daemon's manifest store ("Image is up to date"), and BuildKit from its
//     content store, without asking the registry for access, once any
//     build pulled that image (under whatever registry name goes with the
//     digest).
//   - BuildKit cache mounts, shared by every build on the daemon by their
//     id (the target path by default).
//
// What is left: while a classic build runs, the private base image it
// pulled is tagged on its host; a build of another plugin process on the
// same host naming it without credentials could use it in that window
// (builds of this process pull it fresh). A FROM whose name the driver
// cannot resolve is pulled fresh, but its image's ONBUILD triggers and a
// digest it resolves to are not seen. BuildKit reads ONBUILD triggers only
// of base images on the host (the daemon's BuildKit takes no image from an
// ONBUILD COPY --from: it copies from the context).
package engine
