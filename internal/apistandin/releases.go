package apistandin

import (
	"encoding/json"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Release hooks of open-balena-api (src/features/ci-cd/hooks):
// release-versioning.ts, release-update-timestamp.ts and
// track-latest-release.ts, plus the computed fields of
// models/release-additions.ts.

// releaseCustom holds the write-only pseudo fields of a release request.
type releaseCustom struct {
	isFinal any // raw is_final (JavaScript truthiness applies)
	semver  *semverValue
}

// releaseParse is the POSTPARSE of POST and PATCH release: `semver` is
// parsed into its stored parts, `is_final` is set aside (default true on
// POST), variant defaults to "" on POST and update_timestamp is now.
func (s *Server) releaseParse(raw map[string]any, body any, now time.Time, post bool) (*releaseCustom, *apiError) {
	m, _ := body.(map[string]any)
	rc := &releaseCustom{isFinal: m["is_final"]}
	if v, ok := m["semver"]; ok && v != nil {
		sv := s.parseSemver(v)
		if sv == nil {
			return nil, jsonError(400, "Invalid semver format")
		}
		rc.semver = sv
		raw["semver_major"] = json.Number(strconv.FormatInt(sv.major, 10))
		raw["semver_minor"] = json.Number(strconv.FormatInt(sv.minor, 10))
		raw["semver_patch"] = json.Number(strconv.FormatInt(sv.patch, 10))
		raw["semver_prerelease"] = strings.Join(sv.prerelease, ".")
		raw["semver_build"] = strings.Join(sv.build, ".")
	}
	if post {
		if raw["variant"] == nil {
			raw["variant"] = ""
		}
		if rc.isFinal == nil {
			rc.isFinal = true
		}
	}
	raw["update_timestamp"] = json.Number(strconv.FormatInt(now.UnixMilli(), 10))
	return rc, nil
}

// releasePostRun assigns the revision of a final release, then updates
// the fleet target.
func (s *Server) releasePostRun(tx *state, id int64, rc *releaseCustom, now time.Time) *apiError {
	if jsTruthy(rc.isFinal) {
		r, _ := tx.get("release", id)
		build := []string(nil)
		if rc.semver != nil {
			build = rc.semver.build
		}
		rev := nextRevision(tx, r)
		if aerr := checkRevisionInBuild(build, rev); aerr != nil {
			return aerr
		}
		touch(tx, "release", id, now, map[string]any{
			"revision": rev, "is_finalized_at__date": now, "update_timestamp": now,
		})
	}
	trackLatest(tx, []int64{id}, now)
	return checkRules(tx)
}

// revisionPlan is what PATCH release's PRERUN found: the releases to
// (re)number, in order.
type revisionPlan struct {
	ids []int64
}

// releasePreRun refuses final-to-draft, and picks the releases whose
// revision must be assigned or renumbered (clearing the latter first).
func (s *Server) releasePreRun(tx *state, ids []int64, raw map[string]any, rc *releaseCustom) (*revisionPlan, *apiError) {
	if b, ok := rc.isFinal.(bool); ok && !b {
		for _, id := range ids {
			if r, _ := tx.get("release", id); !r.isNull("revision") {
				return nil, jsonError(400, "Finalized releases cannot be converted to draft.")
			}
		}
	}
	type pred func(r row) bool
	var filters, partFilters []pred
	if jsTruthy(rc.isFinal) {
		filters = append(filters, func(r row) bool { return r.isNull("revision") })
	}
	if sv := rc.semver; sv != nil {
		pre := strings.Join(sv.prerelease, ".")
		partFilters = append(partFilters, func(r row) bool {
			return !r.isNull("revision") && !(r.int("semver_major") == sv.major && r.int("semver_minor") == sv.minor &&
				r.int("semver_patch") == sv.patch && r.str("semver_prerelease") == pre)
		})
	}
	if v := raw["belongs_to__application"]; v != nil {
		app, _ := jsParseInt(v)
		partFilters = append(partFilters, func(r row) bool {
			return !r.isNull("revision") && r.int("belongs_to__application") != app
		})
	}
	if v, ok := raw["variant"].(string); ok {
		partFilters = append(partFilters, func(r row) bool { return !r.isNull("revision") && r.str("variant") != v })
	}
	filters = append(filters, partFilters...)
	if len(filters) == 0 || len(ids) == 0 {
		return nil, nil
	}
	var picked []row
	for _, id := range ids {
		r, _ := tx.get("release", id)
		for _, f := range filters {
			if f(r) {
				picked = append(picked, r)
				break
			}
		}
	}
	sort.SliceStable(picked, func(i, j int) bool {
		a, b := picked[i], picked[j]
		if a.int("belongs_to__application") != b.int("belongs_to__application") {
			return a.int("belongs_to__application") < b.int("belongs_to__application")
		}
		fa, fb := a["is_finalized_at__date"], b["is_finalized_at__date"]
		if fa != nil && fb != nil && !fa.(time.Time).Equal(fb.(time.Time)) {
			return fa.(time.Time).Before(fb.(time.Time))
		}
		if (fa == nil) != (fb == nil) {
			return fb == nil // NULLS LAST
		}
		return a.id() < b.id()
	})
	plan := &revisionPlan{}
	for _, r := range picked {
		plan.ids = append(plan.ids, r.id())
		if len(partFilters) > 0 && !r.isNull("revision") {
			touch(tx, "release", r.id(), r["modified_at"].(time.Time), map[string]any{"revision": nil})
		}
	}
	return plan, nil
}

// releasePatchPostRun numbers the planned releases and updates the fleet
// targets when a tracked field changed.
func (s *Server) releasePatchPostRun(tx *state, ids []int64, raw map[string]any, rc *releaseCustom, plan *revisionPlan, now time.Time) *apiError {
	var tracked []int64
	if plan != nil {
		for _, id := range plan.ids {
			r, _ := tx.get("release", id)
			rev := nextRevision(tx, r)
			var build []string
			if b := r.str("semver_build"); b != "" {
				build = strings.Split(b, ".")
			}
			if aerr := checkRevisionInBuild(build, rev); aerr != nil {
				return aerr
			}
			vals := map[string]any{"revision": rev, "update_timestamp": now}
			if jsTruthy(rc.isFinal) && r.isNull("is_finalized_at__date") {
				vals["is_finalized_at__date"] = now
			}
			touch(tx, "release", id, now, vals)
			tracked = append(tracked, id)
		}
	}
	if len(ids) > 0 {
		for _, f := range []string{"status", "is_passing_tests", "revision", "is_invalidated"} {
			if _, ok := raw[f]; ok {
				tracked = append(tracked, ids...)
				break
			}
		}
	}
	if len(tracked) > 0 {
		trackLatest(tx, tracked, now)
	}
	return checkRules(tx)
}

// nextRevision is 1 + the highest revision among the application's final
// releases with the same major.minor.patch-prerelease and variant, or 0.
func nextRevision(tx *state, r row) int64 {
	next := int64(0)
	for _, o := range tx.rows("release") {
		if o.isNull("revision") || o.id() == r.id() ||
			o.int("belongs_to__application") != r.int("belongs_to__application") ||
			o.int("semver_major") != r.int("semver_major") || o.int("semver_minor") != r.int("semver_minor") ||
			o.int("semver_patch") != r.int("semver_patch") || o.str("semver_prerelease") != r.str("semver_prerelease") ||
			o.str("variant") != r.str("variant") {
			continue
		}
		if o.int("revision") >= next {
			next = o.int("revision") + 1
		}
	}
	return next
}

// checkRevisionInBuild refuses a semver build "revN" that differs from the
// generated revision.
func checkRevisionInBuild(build []string, rev int64) *apiError {
	re := regexp.MustCompile(`^rev(\d+)$`)
	for _, b := range build {
		if m := re.FindStringSubmatch(b); m != nil && m[1] != strconv.FormatInt(rev, 10) {
			return jsonError(400, "The provided revision does not match the autogenerated one.")
		}
	}
	return nil
}

// trackLatest points every tracking fleet owning one of the releases at
// its latest (start_timestamp desc, then id desc) final, passing, valid,
// successful release. A fleet with no such release keeps its target.
func trackLatest(tx *state, releaseIDs []int64, now time.Time) {
	apps := map[int64]bool{}
	for _, id := range releaseIDs {
		if r, ok := tx.get("release", id); ok {
			apps[r.int("belongs_to__application")] = true
		}
	}
	for appID := range apps {
		app, ok := tx.get("application", appID)
		if !ok || !app.boolean("should_track_latest_release") {
			continue
		}
		var best row
		for _, r := range tx.rows("release") {
			if r.int("belongs_to__application") != appID || r.isNull("revision") || !r.boolean("is_passing_tests") ||
				r.boolean("is_invalidated") || r.str("status") != "success" {
				continue
			}
			if best == nil {
				best = r
				continue
			}
			bt, rt := best["start_timestamp"].(time.Time), r["start_timestamp"].(time.Time)
			if rt.After(bt) || (rt.Equal(bt) && r.id() > best.id()) {
				best = r
			}
		}
		if best != nil && app["should_be_running__release"] != best.id() {
			touch(tx, "application", appID, now, map[string]any{"should_be_running__release": best.id()})
		}
	}
}

// computed returns a computed field of a row (only releases have some).
func (s *Server) computed(_ *state, t *table, r row, name string) any {
	if t.name != "release" {
		return nil
	}
	v := versionOf(r)
	switch name {
	case "is_final":
		return !r.isNull("revision")
	case "semver":
		return v.semver
	case "raw_version":
		return v.raw
	case "version":
		return v.object
	}
	return nil
}

type releaseVersion struct {
	semver, raw string
	object      object
}

func versionOf(r row) releaseVersion {
	core := strconv.FormatInt(r.int("semver_major"), 10) + "." + strconv.FormatInt(r.int("semver_minor"), 10) +
		"." + strconv.FormatInt(r.int("semver_patch"), 10)
	pre, build, variant := r.str("semver_prerelease"), r.str("semver_build"), r.str("variant")
	draft := r.isNull("revision")
	rev := r.int("revision")

	semver := core
	if pre != "" {
		semver += "-" + pre
	}
	if build != "" {
		semver += "+" + build
	}

	var preParts []string
	var preJSON []any
	if pre != "" {
		preParts = append(preParts, pre)
		for _, p := range strings.Split(pre, ".") {
			preJSON = append(preJSON, p)
		}
	}
	if draft {
		ms := int64(0)
		if t, ok := r["created_at"].(time.Time); ok {
			ms = t.UnixMilli()
		}
		preParts = append(preParts, strconv.FormatInt(ms, 10))
		preJSON = append(preJSON, ms)
	}
	withPre := core
	if len(preParts) > 0 {
		withPre += "-" + strings.Join(preParts, ".")
	}

	revN := "rev" + strconv.FormatInt(rev, 10)
	revNotInBuild := !draft && rev > 0 && !strings.Contains("."+build+".", "."+revN+".")
	var buildParts []string
	buildJSON := []any{}
	if build != "" {
		buildParts = append(buildParts, build)
		for _, b := range strings.Split(build, ".") {
			buildJSON = append(buildJSON, b)
		}
	}
	if revNotInBuild {
		buildParts = append(buildParts, revN)
		buildJSON = append(buildJSON, revN)
	}
	if variant != "" {
		buildParts = append(buildParts, variant)
		buildJSON = append(buildJSON, variant)
	}
	raw := withPre
	if build != "" || (!draft && rev > 0) || variant != "" {
		raw += "+"
	}
	raw += strings.Join(buildParts, ".")
	if preJSON == nil {
		preJSON = []any{}
	}
	return releaseVersion{
		semver: semver,
		raw:    raw,
		object: object{
			{"raw", raw}, {"major", r.int("semver_major")}, {"minor", r.int("semver_minor")},
			{"patch", r.int("semver_patch")}, {"prerelease", preJSON}, {"build", buildJSON}, {"version", withPre},
		},
	}
}
