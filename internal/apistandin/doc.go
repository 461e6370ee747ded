// Package apistandin is an in-memory HTTP stand-in for open-balena-api
// (v49), for end-to-end tests. It keeps the real API's rules and answers
// (as read in balena-io/open-balena-api and, where they differ, as a
// running open-balena-api v49 was seen to answer), so that what passes
// against it passes against the real one.
//
// # Use
//
//	s, _ := apistandin.New(apistandin.Config{RegistryHost: "127.0.0.1:5000", Issuer: "api.balena.local", BuilderToken: tok})
//	srv := httptest.NewServer(s)
//	key := s.AddUser("admin")                                     // Bearer <key>
//	fleet := s.AddFleet("admin", "amd64fleet", "genericx86-64-ext") // slug "admin/amd64fleet"
//
// A Docker registry (distribution 2.8) verifies its tokens with
// auth.token.realm = srv.URL+"/auth/v1/token", auth.token.service =
// RegistryHost, auth.token.issuer = Issuer and auth.token.rootcertbundle =
// a file holding CertPEM(). JWKS() serves distribution v3, KeyID() is the
// JWT "kid".
//
// # What is served
//
//   - GET /ping, GET /actor/v1/whoami, GET /user/v1/whoami.
//   - /v7 OData: application, device_type, cpu_architecture, organization,
//     application_type, user (read); release, service, image,
//     image__is_part_of__release (alias release_image), image_label,
//     image_environment_variable, release_tag (POST, PATCH, GET); PATCH
//     application. Keys: (N), (@id)?@id=N, (field=literal,...). Options:
//     $filter, $select, $expand (nested, with options), $orderby, $top,
//     $skip, /$count, returnResource=false.
//   - GET /auth/v1/token.
//
// Not served: /v6 (501), DELETE (405), PUT (405), devices, /login_ and
// session JWTs (API keys are the only credentials), device keys.
//
// # Rules kept
//
// Auth: unknown or missing API key reads as no user: GETs answer
// {"d":[]} (device types excepted), writes 401 with an empty body. Every
// user may read and write every fleet, as open-balena's roles allow.
// Bodies over 512 KB: 413 with an HTML page; malformed JSON: 400 HTML.
// POST: 201 with the row as GET renders it (FKs {"__id":N}, dates as ISO
// strings with milliseconds, image_size as a string) and a Location
// header; the id sequence advances even when the insert then fails.
// PATCH: 200 with an empty body, whatever matched. Errors are
// JSON-encoded strings: type errors 400 `"field" ...`; missing NOT NULL
// fields 500 with an empty body; enums 400 "Check constraint violated";
// unique indexes 409 `"a" and "b" must be unique.`; unknown foreign keys
// 409 "Data is referenced by <field>."; SBVR rules 400 with the rule text.
// Releases follow release-versioning.ts (is_final defaults true, revision
// per (fleet, version, prerelease, variant) from 0 at POST time, drafts
// have none, final to draft is refused) and track-latest-release.ts
// (after a write touching status/revision/is_passing_tests/is_invalidated
// the fleet targets its latest final, passing, valid, successful release
// by start_timestamp then id; with none it keeps its target).
//
// Registry access follows registry.ts: the builder token gets pull,push
// on every parsed scope with sub ""; a user gets push on v2/<hash> when an
// image is stored there, and pull only once that image is linked to a
// release (image__is_part_of__release), so link before asking for a
// push,pull token; names with a registry host are dropped.
//
// Where the stand-in cannot know the real answer it says so: malformed or
// unknown $filter/$select/$expand answer 400 "apistandin: ...". Length
// rules other than commit and tag key use rule texts written in the SBVR
// style, not copied from the real model.
package apistandin
