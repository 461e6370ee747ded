package apistandin

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestPostReleaseBody(t *testing.T) {
	h := newHarness(t)
	body := h.releaseBody(map[string]any{"is_created_by__user": 5, "whatever": "ignored", "contract": map[string]any{"type": "sw.application"}})
	r := h.do("POST", "/v7/release", h.key, body)
	if r.status != 201 {
		t.Fatalf("POST: %s", r)
	}
	m := r.obj(t)
	id := int64(m["id"].(float64))
	if loc := r.header.Get("Location"); loc != fmt.Sprintf("/v7/release(@id)?@id=%d", id) {
		t.Errorf("location: %q", loc)
	}
	now := isoTime(h.clock)
	for k, want := range map[string]any{
		"commit": "0123456789abcdef0123456789abcdef", "status": "running", "source": "cloud",
		"build_log": nil, "is_invalidated": false, "start_timestamp": now, "end_timestamp": nil,
		"update_timestamp": now, "created_at": now, "release_version": nil, "is_passing_tests": true,
		"is_finalized_at__date": now, "phase": nil, "semver_major": float64(0), "semver_minor": float64(0),
		"semver_patch": float64(0), "semver_prerelease": "", "semver_build": "", "variant": "",
		"revision": float64(0), "known_issue_list": nil, "note": nil, "invalidation_reason": nil,
		"is_final": true, "semver": "0.0.0", "raw_version": "0.0.0",
	} {
		if fmt.Sprint(m[k]) != fmt.Sprint(want) {
			t.Errorf("%s = %#v, want %#v", k, m[k], want)
		}
	}
	if fk := m["belongs_to__application"].(map[string]any); fk["__id"] != float64(h.fleet.ID) {
		t.Errorf("belongs_to__application: %v", fk)
	}
	if fmt.Sprint(m["composition"]) != "map[services:map[main:map[]]]" || fmt.Sprint(m["contract"]) != "map[type:sw.application]" {
		t.Errorf("json fields: %v %v", m["composition"], m["contract"])
	}
	if fmt.Sprint(m["version"]) != "map[build:[] major:0 minor:0 patch:0 prerelease:[] raw:0.0.0 version:0.0.0]" {
		t.Errorf("version: %v", m["version"])
	}
	if _, ok := m["is_created_by__user"]; ok {
		t.Error("unknown field echoed")
	}
	// GET returns the same row.
	g := h.get(fmt.Sprintf("/v7/release(%d)", id))
	if fmt.Sprint(g[0]) != fmt.Sprint(m) {
		t.Errorf("GET differs from the 201 body:\n%v\n%v", g[0], m)
	}
	if r := h.do("POST", "/v7/release?returnResource=false", h.key, h.releaseBody(map[string]any{"commit": "x"})); r.status != 201 || string(r.body) != fmt.Sprintf(`{"id":%d}`, id+1) {
		t.Errorf("returnResource=false: %s", r)
	}
}

func TestReleaseRequiredFields(t *testing.T) {
	h := newHarness(t)
	for _, f := range []string{"belongs_to__application", "commit", "composition", "status", "source", "start_timestamp"} {
		t.Run(f, func(t *testing.T) {
			r := h.do("POST", "/v7/release", h.key, h.releaseBody(map[string]any{f: nil}))
			if r.status != 500 || len(r.body) != 0 {
				t.Errorf("missing %s: %s", f, r)
			}
			// An explicit null is caught by type validation instead.
			body := h.releaseBody(nil)
			body[f] = nil
			r = h.do("POST", "/v7/release", h.key, body)
			if r.status != 400 || r.str(t) != fmt.Sprintf("%q cannot be null", f) {
				t.Errorf("null %s: %s", f, r)
			}
		})
	}
	// The six failed inserts used up ids 1..6 (null values failed before the insert).
	if id := h.postRelease(nil); id != 7 {
		t.Errorf("next id = %d, want 7", id)
	}
}

func TestReleaseValidation(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name   string
		extra  map[string]any
		status int
		body   string // JSON string body; "" when not checked
	}{
		{"bad status", map[string]any{"status": "done"}, 400, "Check constraint violated"},
		{"bad source", map[string]any{"source": "remote"}, 400, "Check constraint violated"},
		{"interrupted is a status", map[string]any{"status": "interrupted"}, 201, ""},
		{"commit of 40", map[string]any{"commit": strings.Repeat("a", 40)}, 201, ""},
		{"commit of 41", map[string]any{"commit": strings.Repeat("b", 41)}, 400, ruleCommitLength},
		{"commit not a string", map[string]any{"commit": 5}, 400, `"commit" is not a string: 5`},
		{"composition not an object", map[string]any{"composition": "x"}, 400, `"composition" is not an object/array: string`},
		{"empty composition", map[string]any{"composition": map[string]any{}, "commit": "c1"}, 201, ""},
		{"ISO start", map[string]any{"start_timestamp": "2024-05-06T07:08:09.123Z", "commit": "c2"}, 201, ""},
		{"bad date", map[string]any{"start_timestamp": "yesterday"}, 400, `"start_timestamp" is not a valid date: yesterday`},
		{"bad semver", map[string]any{"semver": "1.2"}, 400, "Invalid semver format"},
		{"bad semver type", map[string]any{"semver": 1}, 400, "Invalid semver format"},
		{"unknown application", map[string]any{"belongs_to__application": 999}, 409, "Data is referenced by belongs_to__application."},
		{"bad bool", map[string]any{"is_invalidated": "yes"}, 400, `"is_invalidated" is not a boolean: "yes" (string)`},
		{"invalidation reason without invalidated", map[string]any{"invalidation_reason": "x", "commit": "c3"}, 400, ruleInvalidationReason},
		{"phase enum", map[string]any{"phase": "old"}, 400, "Check constraint violated"},
		{"known issue list too long", map[string]any{"known_issue_list": strings.Repeat("k", 1001), "commit": "c4"}, 400,
			"It is necessary that each release that has a known issue list, has a known issue list that has a Length (Type) that is less than or equal to 1000."},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.do("POST", "/v7/release", h.key, h.releaseBody(c.extra))
			if r.status != c.status {
				t.Fatalf("status: %s", r)
			}
			if c.body != "" && r.str(t) != c.body {
				t.Errorf("body: %q, want %q", r.str(t), c.body)
			}
		})
	}
}

func TestReleaseDates(t *testing.T) {
	h := newHarness(t)
	id := h.postRelease(map[string]any{"start_timestamp": "2024-05-06T09:08:09.123+02:00", "end_timestamp": int64(1700000000123)})
	r := h.release(id)
	if !r.StartTimestamp.Equal(time.Date(2024, 5, 6, 7, 8, 9, 123e6, time.UTC)) || r.EndTimestamp == nil ||
		r.EndTimestamp.UnixMilli() != 1700000000123 {
		t.Errorf("dates: %v %v", r.StartTimestamp, r.EndTimestamp)
	}
	if r.Raw["start_timestamp"] != "2024-05-06T07:08:09.123Z" || r.Raw["end_timestamp"] != "2023-11-14T22:13:20.123Z" {
		t.Errorf("rendered: %v %v", r.Raw["start_timestamp"], r.Raw["end_timestamp"])
	}
	h.tick(time.Minute)
	h.mustPatch(fmt.Sprintf("/v7/release(%d)", id), map[string]any{"end_timestamp": "2024-05-06T07:10:00Z"})
	r2 := h.release(id)
	if !r2.UpdateTimestamp.Equal(h.clock) || !r2.UpdateTimestamp.After(r.UpdateTimestamp) {
		t.Errorf("update_timestamp not refreshed: %v -> %v", r.UpdateTimestamp, r2.UpdateTimestamp)
	}
}

func TestReleaseRevisions(t *testing.T) {
	h := newHarness(t)
	other := h.s.AddFleet("admin", "otherfleet", "intel-nuc")
	rev := func(id int64) any { return ptrVal(h.release(id).Revision) }

	a := h.postRelease(map[string]any{"commit": "a"})
	b := h.postRelease(map[string]any{"commit": "b", "status": "cancelled"})
	c := h.postRelease(map[string]any{"commit": "c", "status": "failed"})
	d := h.postRelease(map[string]any{"commit": "d", "semver": "1.2.3"})
	e := h.postRelease(map[string]any{"commit": "e", "semver": "1.2.3"})
	f := h.postRelease(map[string]any{"commit": "f", "semver": "1.2.3-beta.1"})
	g := h.mustPost("release", h.releaseBody(map[string]any{"commit": "g", "belongs_to__application": other.ID}))
	draft := h.postRelease(map[string]any{"commit": "h", "is_final": false})
	cases := []struct {
		id      int64
		rev     any
		semver  string
		raw     string
		isFinal bool
	}{
		{a, int64(0), "0.0.0", "0.0.0", true},
		{b, int64(1), "0.0.0", "0.0.0+rev1", true}, // cancelled and failed finals use up revisions
		{c, int64(2), "0.0.0", "0.0.0+rev2", true},
		{d, int64(0), "1.2.3", "1.2.3", true},
		{e, int64(1), "1.2.3", "1.2.3+rev1", true},
		{f, int64(0), "1.2.3-beta.1", "1.2.3-beta.1", true},
		{g, int64(0), "0.0.0", "0.0.0", true}, // per application
		{draft, nil, "0.0.0", fmt.Sprintf("0.0.0-%d", h.clock.UnixMilli()), false},
	}
	for _, c := range cases {
		r := h.release(c.id)
		if rev(c.id) != c.rev || r.Semver != c.semver || r.RawVersion != c.raw || r.IsFinal != c.isFinal ||
			r.Raw["is_final"] != c.isFinal || r.Raw["raw_version"] != c.raw {
			t.Errorf("release %s: rev %v semver %q raw %q final %v", r.Commit, rev(c.id), r.Semver, r.RawVersion, r.IsFinal)
		}
	}
	if r := h.release(draft); r.IsFinalizedAt != nil ||
		fmt.Sprint(r.Raw["version"]) != fmt.Sprintf("map[build:[] major:0 minor:0 patch:0 prerelease:[%v] raw:0.0.0-%d version:0.0.0-%d]",
			float64(h.clock.UnixMilli()), h.clock.UnixMilli(), h.clock.UnixMilli()) {
		t.Errorf("draft version: %v", r.Raw["version"])
	}
	if r := h.release(e); fmt.Sprint(r.Raw["version"]) != "map[build:[rev1] major:1 minor:2 patch:3 prerelease:[] raw:1.2.3+rev1 version:1.2.3]" {
		t.Errorf("final version: %v", r.Raw["version"])
	}

	// Finalizing a draft assigns the next revision, even when cancelled.
	h.mustPatch(fmt.Sprintf("/v7/release(%d)", draft), map[string]any{"status": "cancelled"})
	h.tick(time.Second)
	h.mustPatch(fmt.Sprintf("/v7/release(%d)", draft), map[string]any{"is_final": true})
	if r := h.release(draft); rev(draft) != int64(3) || !r.IsFinal || r.IsFinalizedAt == nil || !r.IsFinalizedAt.Equal(h.clock) {
		t.Errorf("finalized draft: rev %v %+v", rev(draft), r)
	}
	// Final to draft is refused; draft to draft and final to final are no-ops.
	r := h.do("PATCH", fmt.Sprintf("/v7/release(%d)", a), h.key, map[string]any{"is_final": false})
	if r.status != 400 || r.str(t) != "Finalized releases cannot be converted to draft." {
		t.Errorf("final to draft: %s", r)
	}
	d2 := h.postRelease(map[string]any{"commit": "i", "is_final": false})
	h.mustPatch(fmt.Sprintf("/v7/release(%d)", d2), map[string]any{"is_final": false})
	h.mustPatch(fmt.Sprintf("/v7/release(%d)", a), map[string]any{"is_final": true})
	if rev(d2) != nil || rev(a) != int64(0) {
		t.Errorf("no-ops changed revisions: %v %v", rev(d2), rev(a))
	}

	// A build revN must match the generated revision.
	r = h.do("POST", "/v7/release", h.key, h.releaseBody(map[string]any{"commit": "j", "semver": "1.2.3+rev5"}))
	if r.status != 400 || r.str(t) != "The provided revision does not match the autogenerated one." {
		t.Errorf("rev mismatch: %s", r)
	}
	k := h.postRelease(map[string]any{"commit": "k", "semver": "v1.2.3+rev2"})
	if kr := h.release(k); rev(k) != int64(2) || kr.RawVersion != "1.2.3+rev2" || kr.Semver != "1.2.3+rev2" {
		t.Errorf("matching revN: %v %q %q", rev(k), kr.RawVersion, kr.Semver)
	}

	// Changing the semver of a final release renumbers it in its new version.
	h.mustPatch(fmt.Sprintf("/v7/release(%d)", f), map[string]any{"semver": "1.2.3"})
	if rev(f) != int64(3) || h.release(f).Semver != "1.2.3" {
		t.Errorf("renumbered: %v %q", rev(f), h.release(f).Semver)
	}
}

func TestSemverParsing(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		in     string
		ok     bool
		semver string
	}{
		{"1.2.3", true, "1.2.3"},
		{" v1.2.3 ", true, "1.2.3"},
		{"1.2.3-rc.1+build.5", true, "1.2.3-rc.1+build.5"},
		{"1.2.3-0a", true, "1.2.3-0a"},
		{"1.2", false, ""},
		{"01.2.3", false, ""},
		{"1.2.3-01", false, ""},
		{"1.2.3-", false, ""},
		{"=1.2.3", false, ""},
		{"latest", false, ""},
	}
	for i, c := range cases {
		r := h.do("POST", "/v7/release", h.key, h.releaseBody(map[string]any{"semver": c.in, "commit": fmt.Sprint("s", i), "is_final": false}))
		if c.ok != (r.status == 201) {
			t.Errorf("semver %q: %s", c.in, r)
			continue
		}
		if c.ok && r.obj(t)["semver"] != c.semver {
			t.Errorf("semver %q stored as %v", c.in, r.obj(t)["semver"])
		}
	}
}

func TestPatchRelease(t *testing.T) {
	h := newHarness(t)
	id := h.postRelease(nil)
	h.mustPatch(fmt.Sprintf("/v7/release(%d)", id), map[string]any{"note": "hello", "unknown": 1})
	h.mustPatch("/v7/release(9999)", map[string]any{"note": "nobody"})
	if r := h.release(id); r.Note != "hello" {
		t.Errorf("note: %q", r.Note)
	}
	// Type validation applies even when nothing matches; check constraints
	// (enums) are the database's, so only matched rows are checked.
	if r := h.do("PATCH", "/v7/release(9999)", h.key, map[string]any{"status": 5}); r.status != 400 {
		t.Errorf("bad type on missing row: %s", r)
	}
	h.mustPatch("/v7/release(9999)", map[string]any{"status": "bogus"})
	if r := h.do("PATCH", fmt.Sprintf("/v7/release(%d)", id), h.key, map[string]any{"status": "bogus"}); r.status != 400 ||
		r.str(t) != "Check constraint violated" {
		t.Errorf("bad enum: %s", r)
	}
	if r := h.do("PATCH", fmt.Sprintf("/v7/release(%d)", id), h.key, map[string]any{"commit": nil}); r.status != 400 ||
		r.str(t) != `"commit" cannot be null` {
		t.Errorf("null commit: %s", r)
	}
	// balena-cli's Ctrl-C: the filter restricts what is patched.
	done := h.postRelease(map[string]any{"commit": "done", "status": "success"})
	for _, rid := range []int64{id, done} {
		h.mustPatch(fmt.Sprintf("/v7/release(%d)?$filter=status ne 'success'", rid),
			map[string]any{"status": "cancelled", "end_timestamp": h.clock.UnixMilli()})
	}
	if s1, s2 := h.release(id).Status, h.release(done).Status; s1 != "cancelled" || s2 != "success" {
		t.Errorf("cancel: %s %s", s1, s2)
	}
	if h.release(done).EndTimestamp != nil {
		t.Error("the success release was patched")
	}
	// PATCH by $filter only.
	h.mustPatch(fmt.Sprintf("/v7/release?$filter=belongs_to__application eq %d and status eq 'cancelled'", h.fleet.ID),
		map[string]any{"note": "bulk"})
	if h.release(id).Note != "bulk" || h.release(done).Note != "" {
		t.Error("filtered bulk patch")
	}
	// A failed PATCH changes nothing.
	if r := h.do("PATCH", fmt.Sprintf("/v7/release(%d)", id), h.key, map[string]any{"note": "x", "commit": strings.Repeat("z", 41)}); r.status != 400 {
		t.Errorf("long commit: %s", r)
	}
	if h.release(id).Note != "bulk" {
		t.Error("failed PATCH was applied")
	}
}

func TestUniqueSuccessCommit(t *testing.T) {
	h := newHarness(t)
	other := h.s.AddFleet("admin", "otherfleet", "intel-nuc")
	h.postRelease(map[string]any{"commit": "same", "status": "success"})
	r := h.do("POST", "/v7/release", h.key, h.releaseBody(map[string]any{"commit": "same", "status": "success"}))
	if r.status != 400 || r.str(t) != ruleSuccessCommit {
		t.Errorf("second success POST: %s", r)
	}
	running := h.postRelease(map[string]any{"commit": "same"}) // not success: allowed
	r = h.do("PATCH", fmt.Sprintf("/v7/release(%d)", running), h.key, map[string]any{"status": "success"})
	if r.status != 400 || r.str(t) != ruleSuccessCommit {
		t.Errorf("PATCH to success: %s", r)
	}
	h.mustPost("release", h.releaseBody(map[string]any{"commit": "same", "status": "success", "belongs_to__application": other.ID}))
}

func TestFleetTarget(t *testing.T) {
	h := newHarness(t)
	at := func(sec int) map[string]any {
		return map[string]any{"start_timestamp": time.Unix(int64(sec), 0).UnixMilli()}
	}
	with := func(m map[string]any, kv ...any) map[string]any {
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	r1 := h.postRelease(with(at(100), "commit", "r1"))
	if id, ok := h.s.FleetTarget(h.fleet.ID); ok {
		t.Fatalf("running release became target %d", id)
	}
	h.mustPatch(fmt.Sprintf("/v7/release(%d)", r1), map[string]any{"status": "success"})
	if h.target() != r1 {
		t.Fatalf("target %d, want %d", h.target(), r1)
	}
	// A successful draft never becomes the target; finalizing it does.
	d := h.postRelease(with(at(200), "commit", "d", "status", "success", "is_final", false))
	if h.target() != r1 {
		t.Errorf("draft became target")
	}
	h.mustPatch(fmt.Sprintf("/v7/release(%d)", d), map[string]any{"is_final": true})
	if h.target() != d {
		t.Errorf("finalized draft: target %d, want %d", h.target(), d)
	}
	// A success release started earlier does not replace a later one.
	old := h.postRelease(with(at(150), "commit", "old", "status", "success"))
	if h.target() != d {
		t.Errorf("older success took over: %d", h.target())
	}
	// Failed, running and cancelled releases never do.
	for i, st := range []string{"failed", "running", "cancelled", "error"} {
		h.postRelease(with(at(300+i), "commit", "x"+st, "status", st))
	}
	if h.target() != d {
		t.Errorf("non-success release took over: %d", h.target())
	}
	// Equal start_timestamp: the higher id wins.
	tie := h.postRelease(with(at(200), "commit", "tie", "status", "success"))
	if h.target() != tie {
		t.Errorf("tie: target %d, want %d", h.target(), tie)
	}
	// Invalidating the target moves it back to the latest valid release.
	h.mustPatch(fmt.Sprintf("/v7/release(%d)", tie), map[string]any{"is_invalidated": true})
	if h.target() != d {
		t.Errorf("after invalidation: target %d, want %d", h.target(), d)
	}
	// The target release cannot leave success.
	r := h.do("PATCH", fmt.Sprintf("/v7/release(%d)", d), h.key, map[string]any{"status": "failed"})
	if r.status != 400 || r.str(t) != ruleTarget {
		t.Errorf("target to failed: %s", r)
	}
	// A fleet that does not track latest keeps its target.
	h.mustPatch(fmt.Sprintf("/v7/application(%d)", h.fleet.ID), map[string]any{"should_track_latest_release": false, "should_be_running__release": old})
	h.postRelease(with(at(999), "commit", "newest", "status", "success"))
	if h.target() != old {
		t.Errorf("pinned fleet moved: %d", h.target())
	}
	// Pinning a non-success release is refused.
	if r := h.do("PATCH", fmt.Sprintf("/v7/application(%d)", h.fleet.ID), h.key, map[string]any{"should_be_running__release": r1 + 100}); r.status != 409 {
		t.Errorf("pin to missing release: %s", r)
	}
	failed := h.postRelease(with(at(1000), "commit", "failed2", "status", "failed"))
	if r := h.do("PATCH", fmt.Sprintf("/v7/application(%d)", h.fleet.ID), h.key, map[string]any{"should_be_running__release": failed}); r.status != 400 || r.str(t) != ruleTarget {
		t.Errorf("pin to failed release: %s", r)
	}
}

func TestReleaseSnapshot(t *testing.T) {
	h := newHarness(t)
	id := h.postRelease(map[string]any{"semver": "2.0.0", "note": "n", "build_log": "log"})
	r := h.release(id)
	if r.ID != id || r.Application != h.fleet.ID || r.Semver != "2.0.0" || r.Note != "n" || r.BuildLog != "log" ||
		r.Revision == nil || *r.Revision != 0 || r.Raw["id"] != float64(id) || string(r.Composition) != `{"services":{"main":{}}}` {
		t.Errorf("snapshot: %+v", r)
	}
	if rs := h.s.Releases(); len(rs) != 1 || rs[0].ID != id {
		t.Errorf("Releases: %+v", rs)
	}
	if _, ok := h.s.Release(id + 1); ok {
		t.Error("Release of a missing id")
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`).MatchString(r.Raw["created_at"].(string)) {
		t.Errorf("created_at format: %v", r.Raw["created_at"])
	}
}
