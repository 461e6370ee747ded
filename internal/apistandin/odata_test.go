package apistandin

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseFilter(t *testing.T) {
	cases := []struct {
		in   string
		want string // fmt of the AST, or "error"
	}{
		{"slug eq 'a/b'", "{eq {[slug]} {a/b}}"},
		{"commit eq 'it''s'", "{eq {[commit]} {it's}}"},
		{"application eq 12 and service_name eq 'main'", "{and {eq {[application]} {12}} {eq {[service_name]} {main}}}"},
		{"a eq 1 or b eq 2 and c eq 3", "{or {eq {[a]} {1}} {and {eq {[b]} {2}} {eq {[c]} {3}}}}"},
		{"(a eq 1 or b eq 2) and c eq 3", "{and {or {eq {[a]} {1}} {eq {[b]} {2}}} {eq {[c]} {3}}}"},
		{"status ne 'success'", "{ne {[status]} {success}}"},
		{"not (x eq null)", "{{eq {[x]} {<nil>}}}"},
		{"is_directly_accessible_by__user/any(dau:1 eq 1)", "{[is_directly_accessible_by__user] false dau {eq {1} {1}}}"},
		{"owns__release/all(r:r/status eq 'success')", "{[owns__release] true r {eq {[r status]} {success}}}"},
		{"owns__release/any()", "{[owns__release] false  <nil>}"},
		{"belongs_to__application/slug eq 'x'", "{eq {[belongs_to__application slug]} {x}}"},
		{"id in (1, 2)", "{{[id]} [{1} {2}]}"},
		{"startswith(slug,'ad')", "{startswith [{[slug]} {ad}]}"},
		{"revision ge -1.5", "{ge {[revision]} {-1.5}}"},
		{"a eq true", "{eq {[a]} {true}}"},
		{"slug eq @a", "{eq {[slug]} {x}}"},
		{"slug eq 'unterminated", "error"},
		{"slug eq", "error"},
		{"slug eq 'a' and", "error"},
		{"(slug eq 'a'", "error"},
		{"slug eq 'a' extra", "error"},
		{"slug eq @missing", "error"},
	}
	params := func(k string) (string, bool) {
		if k == "@a" {
			return "'x'", true
		}
		return "", false
	}
	for _, c := range cases {
		e, err := parseFilter(c.in, params)
		got := "error"
		if err == nil {
			got = fmt.Sprint(e)
		}
		if got != c.want {
			t.Errorf("parseFilter(%q) = %s, want %s", c.in, got, c.want)
		}
	}
	e, err := parseFilter("start_timestamp gt datetime'2020-01-01T00:00:00Z'", nil)
	if err != nil || e.(binExpr).r.(litExpr).v != time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC) {
		t.Errorf("datetime literal: %v %v", e, err)
	}
}

func TestApplicationFilters(t *testing.T) {
	h := newHarness(t)
	other := h.s.AddFleet("Other", "ArmFleet", "raspberrypi4-64")
	cases := []struct {
		filter string
		want   []string
	}{
		{"slug eq 'admin/amd64fleet'", []string{"admin/amd64fleet"}},
		{"slug eq 'other/armfleet'", []string{"other/armfleet"}},
		{"slug eq 'nope'", nil},
		{"is_directly_accessible_by__user/any(dau:1 eq 1) and app_name eq 'amd64fleet'", []string{"admin/amd64fleet"}},
		{"is_directly_accessible_by__user/any(dau:1 eq 1) and (slug eq 'other/armfleet' or uuid eq 'other/armfleet')", []string{"other/armfleet"}},
		{"is_directly_accessible_by__user/any(dau:1 eq 1) and (slug eq '" + other.UUID + "' or uuid eq '" + other.UUID + "')", []string{"other/armfleet"}},
		{"slug ne 'admin/amd64fleet'", []string{"other/armfleet"}},
		{fmt.Sprintf("id eq %d", other.ID), []string{"other/armfleet"}},
		{fmt.Sprintf("id in (%d, %d)", h.fleet.ID, other.ID), []string{"admin/amd64fleet", "other/armfleet"}},
		{"is_for__device_type/slug eq 'raspberrypi4-64'", []string{"other/armfleet"}},
		{"is_for__device_type/is_of__cpu_architecture/slug eq 'amd64'", []string{"admin/amd64fleet"}},
		{"should_be_running__release eq null", []string{"admin/amd64fleet", "other/armfleet"}},
		{"startswith(slug,'other/')", []string{"other/armfleet"}},
		{"not startswith(slug,'other/')", []string{"admin/amd64fleet"}},
		{"owns__release/any()", nil},
	}
	for _, c := range cases {
		d := h.get("/v7/application?$select=slug&$filter=" + c.filter)
		var got []string
		for _, a := range d {
			got = append(got, a["slug"].(string))
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: %v, want %v", c.filter, got, c.want)
		}
	}
	// The same filter with no token matches nothing.
	r := h.do("GET", "/v7/application?$filter=is_directly_accessible_by__user/any(dau:1 eq 1)", "", nil)
	if string(r.body) != `{"d":[]}` {
		t.Errorf("anonymous: %s", r)
	}
}

func TestApplicationRendering(t *testing.T) {
	h := newHarness(t)
	d := h.get(fmt.Sprintf("/v7/application(%d)", h.fleet.ID))
	if len(d) != 1 {
		t.Fatalf("application(%d): %v", h.fleet.ID, d)
	}
	a := d[0]
	for k, want := range map[string]any{
		"id": float64(h.fleet.ID), "slug": "admin/amd64fleet", "app_name": "amd64fleet",
		"should_track_latest_release": true, "is_of__class": "fleet", "should_be_running__release": nil,
		"uuid": h.fleet.UUID, "is_host": false, "is_archived": false, "is_public": false,
	} {
		if a[k] != want {
			t.Errorf("%s = %#v, want %#v", k, a[k], want)
		}
	}
	if fk, ok := a["is_for__device_type"].(map[string]any); !ok || fk["__id"] == nil || len(fk) != 1 {
		t.Errorf("unexpanded FK must be {\"__id\":N}: %#v", a["is_for__device_type"])
	}
	if _, err := time.Parse(time.RFC3339, a["created_at"].(string)); err != nil {
		t.Errorf("created_at: %v", a["created_at"])
	}

	// The arch lookup a builder makes.
	r := h.do("GET", "/v7/application?$filter=slug eq 'admin/amd64fleet'&$select=id,slug,app_name,should_be_running__release"+
		"&$expand=is_for__device_type($select=slug;$expand=is_of__cpu_architecture($select=slug))", h.key, nil)
	want := fmt.Sprintf(`{"d":[{"id":%d,"app_name":"amd64fleet","slug":"admin/amd64fleet",`+
		`"is_for__device_type":[{"slug":"genericx86-64-ext","is_of__cpu_architecture":[{"slug":"amd64"}]}],`+
		`"should_be_running__release":null}]}`, h.fleet.ID)
	if string(r.body) != want {
		t.Errorf("expanded:\n got %s\nwant %s", r.body, want)
	}
	if h.fleet.Arch != "amd64" || h.fleet.DeviceType != "genericx86-64-ext" {
		t.Errorf("fleet: %+v", h.fleet)
	}

	// Semicolons sent unescaped, as some clients do.
	r = h.doRaw("GET", "/v7/application?$select=slug&$expand=is_for__device_type($select=slug;$expand=is_of__cpu_architecture($select=slug))", h.key, nil)
	if !strings.Contains(string(r.body), `"is_of__cpu_architecture":[{"slug":"amd64"}]`) {
		t.Errorf("raw semicolons: %s", r)
	}
}

func TestExpandReleaseTarget(t *testing.T) {
	h := newHarness(t)
	rel := h.postRelease(map[string]any{"status": "success"})
	d := h.get("/v7/application?$select=slug&$expand=should_be_running__release($select=id,commit),owns__release($select=id;$filter=status eq 'success';$orderby=id desc)")
	a := d[0]
	target := a["should_be_running__release"].([]any)
	if len(target) != 1 || target[0].(map[string]any)["id"] != float64(rel) {
		t.Errorf("target: %#v", a["should_be_running__release"])
	}
	owns := a["owns__release"].([]any)
	if len(owns) != 1 {
		t.Errorf("owns__release: %#v", owns)
	}
	d = h.get(fmt.Sprintf("/v7/release(%d)?$select=id&$expand=belongs_to__application($select=slug)", rel))
	if d[0]["belongs_to__application"].([]any)[0].(map[string]any)["slug"] != "admin/amd64fleet" {
		t.Errorf("release expand: %v", d)
	}
}

func TestQueryOptions(t *testing.T) {
	h := newHarness(t)
	var ids []int64
	for i := 0; i < 3; i++ {
		ids = append(ids, h.postRelease(map[string]any{"commit": fmt.Sprintf("c%d", i), "start_timestamp": int64(1000 * (3 - i))}))
	}
	d := h.get("/v7/release?$select=id,commit&$orderby=start_timestamp asc&$top=2")
	if len(d) != 2 || d[0]["commit"] != "c2" || d[1]["commit"] != "c1" || len(d[0]) != 2 {
		t.Errorf("orderby/top/select: %v", d)
	}
	d = h.get("/v7/release?$select=commit&$orderby=id desc&$skip=1")
	if len(d) != 2 || d[0]["commit"] != "c1" {
		t.Errorf("skip: %v", d)
	}
	r := h.do("GET", "/v7/release/$count?$filter=commit ne 'c0'", h.key, nil)
	if string(r.body) != `{"d":2}` {
		t.Errorf("$count: %s", r)
	}
	d = h.get(fmt.Sprintf("/v7/release(@id)?@id=%d&$select=commit", ids[1]))
	if len(d) != 1 || d[0]["commit"] != "c1" {
		t.Errorf("@id key: %v", d)
	}
	d = h.get("/v7/release?$select=id&$filter=start_timestamp lt datetime'1970-01-01T00:00:02.500Z'")
	if len(d) != 2 {
		t.Errorf("date filter: %v", d)
	}
	if d := h.get("/v7/release(999)"); len(d) != 0 {
		t.Errorf("missing id: %v", d)
	}
	for _, bad := range []string{
		"/v7/release?$filter=nosuchfield eq 1",
		"/v7/release?$select=nosuchfield",
		"/v7/release?$filter=commit eq",
		"/v7/release?$expand=nosuchnav",
		"/v7/release?$top=x",
		"/v7/release?$filter=release_tag/tag_key eq 'a'",
	} {
		if r := h.do("GET", bad, h.key, nil); r.status != 400 {
			t.Errorf("%s: %s", bad, r)
		}
	}
}

func TestObjectKeepsOrder(t *testing.T) {
	b, err := marshal(object{{"b", 1}, {"a", "<&>"}, {"c", object{{"z", nil}}}})
	if err != nil || string(b) != `{"b":1,"a":"<&>","c":{"z":null}}` {
		t.Errorf("object: %s %v", b, err)
	}
}
