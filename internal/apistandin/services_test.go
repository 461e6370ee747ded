package apistandin

import (
	"fmt"
	"strings"
	"testing"
)

func TestServices(t *testing.T) {
	h := newHarness(t)
	key := fmt.Sprintf("/v7/service(application=%d,service_name='main')", h.fleet.ID)
	if d := h.get(key); len(d) != 0 {
		t.Fatalf("no service yet: %v", d)
	}
	r := h.do("POST", "/v7/service", h.key, map[string]any{"application": h.fleet.ID, "service_name": "main"})
	if r.status != 201 {
		t.Fatalf("POST service: %s", r)
	}
	m := r.obj(t)
	id := m["id"].(float64)
	if m["service_name"] != "main" || m["application"].(map[string]any)["__id"] != float64(h.fleet.ID) || m["created_at"] == nil {
		t.Errorf("201 body: %s", r.body)
	}
	for _, path := range []string{
		key,
		fmt.Sprintf("/v7/service?$filter=application eq %d and service_name eq 'main'", h.fleet.ID),
		fmt.Sprintf("/v7/application__has__service_name?$filter=application eq %d", h.fleet.ID),
	} {
		if d := h.get(path); len(d) != 1 || d[0]["id"] != id {
			t.Errorf("%s: %v", path, d)
		}
	}
	r = h.do("POST", "/v7/service", h.key, map[string]any{"application": h.fleet.ID, "service_name": "main"})
	if r.status != 409 || string(r.body) != `"\"application\" and \"service_name\" must be unique."` {
		t.Errorf("duplicate: %s", r)
	}
	cases := []struct {
		body   map[string]any
		status int
		msg    string
	}{
		{map[string]any{"application": h.fleet.ID}, 500, ""},
		{map[string]any{"service_name": "x"}, 500, ""},
		{map[string]any{"application": h.fleet.ID, "service_name": ""}, 400,
			"It is necessary that each service has a service name that has a Length (Type) that is greater than or equal to 1 and is less than or equal to 63."},
		{map[string]any{"application": h.fleet.ID, "service_name": strings.Repeat("s", 64)}, 400, ""},
		{map[string]any{"application": 777, "service_name": "x"}, 409, "Data is referenced by application."},
		{map[string]any{"application": h.fleet.ID, "service_name": "it's"}, 201, ""},
	}
	for _, c := range cases {
		r := h.do("POST", "/v7/service", h.key, c.body)
		if r.status != c.status || (c.msg != "" && r.str(t) != c.msg) {
			t.Errorf("POST service %v: %s", c.body, r)
		}
	}
	if d := h.get(fmt.Sprintf("/v7/service(application=%d,service_name='it''s')", h.fleet.ID)); len(d) != 1 {
		t.Errorf("quoted natural key: %v", d)
	}
	if svcs := h.s.Services(); len(svcs) != 2 || svcs[0].ServiceName != "main" || svcs[0].Application != h.fleet.ID {
		t.Errorf("Services: %+v", svcs)
	}
}

func TestReleaseImagesLabelsAndEnv(t *testing.T) {
	h := newHarness(t)
	rel := h.postRelease(nil)
	img := h.postImage()
	r := h.do("POST", "/v7/image__is_part_of__release", h.key, map[string]any{"image": img, "is_part_of__release": rel})
	if r.status != 201 {
		t.Fatalf("POST image__is_part_of__release: %s", r)
	}
	ri := int64(r.obj(t)["id"].(float64))
	if r.header.Get("Location") != fmt.Sprintf("/v7/image__is_part_of__release(@id)?@id=%d", ri) {
		t.Errorf("location: %q", r.header.Get("Location"))
	}
	for _, resource := range []string{"image__is_part_of__release", "release_image"} {
		r := h.do("POST", "/v7/"+resource, h.key, map[string]any{"image": img, "is_part_of__release": rel})
		if r.status != 409 || r.str(t) != `"image" and "is_part_of__release" must be unique.` {
			t.Errorf("duplicate via %s: %s", resource, r)
		}
	}
	img2 := h.postImage()
	h.mustPost("release_image", map[string]any{"image": img2, "is_part_of__release": rel})
	for _, body := range []map[string]any{{"image": img}, {"is_part_of__release": rel}} {
		if r := h.do("POST", "/v7/release_image", h.key, body); r.status != 500 {
			t.Errorf("missing field %v: %s", body, r)
		}
	}

	h.mustPost("image_label", map[string]any{"release_image": ri, "label_name": "io.balena.features.dbus", "value": "1"})
	r = h.do("POST", "/v7/image_label", h.key, map[string]any{"release_image": ri, "label_name": "io.balena.features.dbus", "value": "1"})
	if r.status != 409 {
		t.Errorf("duplicate label: %s", r)
	}
	if r := h.do("POST", "/v7/image_label", h.key, map[string]any{"release_image": ri, "label_name": "l"}); r.status != 500 {
		t.Errorf("label without value: %s", r)
	}
	if r := h.do("POST", "/v7/image_label", h.key, map[string]any{"release_image": ri, "label_name": "long", "value": strings.Repeat("v", 301)}); r.status != 400 {
		t.Errorf("label value over 300: %s", r)
	}
	h.mustPost("image_environment_variable", map[string]any{"release_image": ri, "name": "FOO", "value": "bar"})
	if r := h.do("POST", "/v7/image_environment_variable", h.key, map[string]any{"release_image": 999, "name": "X", "value": "y"}); r.status != 409 {
		t.Errorf("env var of a missing release image: %s", r)
	}

	if ris := h.s.ReleaseImages(); len(ris) != 2 || ris[0].ID != ri || ris[0].Image != img || ris[0].Release != rel {
		t.Errorf("ReleaseImages: %+v", ris)
	}
	if ls := h.s.ImageLabels(); len(ls) != 1 || ls[0].ReleaseImage != ri || ls[0].LabelName != "io.balena.features.dbus" || ls[0].Value != "1" {
		t.Errorf("ImageLabels: %+v", ls)
	}
	if es := h.s.ImageEnvironmentVariables(); len(es) != 1 || es[0].Name != "FOO" || es[0].Value != "bar" {
		t.Errorf("ImageEnvironmentVariables: %+v", es)
	}
	d := h.get(fmt.Sprintf("/v7/release(%d)?$select=id&$expand=release_image($select=id;$expand=image($select=id),image_label($select=label_name,value))", rel))
	ris := d[0]["release_image"].([]any)
	if len(ris) != 2 || len(ris[0].(map[string]any)["image_label"].([]any)) != 1 {
		t.Errorf("expanded release images: %v", d)
	}
}

func TestReleaseTags(t *testing.T) {
	h := newHarness(t)
	rel := h.postRelease(nil)
	h.mustPost("release_tag", map[string]any{"release": rel, "tag_key": "k", "value": "v1"})
	r := h.do("POST", "/v7/release_tag", h.key, map[string]any{"release": rel, "tag_key": "k", "value": "v2"})
	if r.status != 409 || r.str(t) != `"release" and "tag_key" must be unique.` {
		t.Fatalf("duplicate tag: %s", r)
	}
	// balena-cli's upsert fallback.
	h.mustPatch(fmt.Sprintf("/v7/release_tag?$filter=release eq %d and tag_key eq 'k'", rel), map[string]any{"value": "v2"})
	if tags := h.s.ReleaseTags(); len(tags) != 1 || tags[0].Value != "v2" || tags[0].TagKey != "k" || tags[0].Release != rel {
		t.Errorf("tags: %+v", tags)
	}
	cases := []struct {
		body   map[string]any
		status int
		msg    string
	}{
		{map[string]any{"release": rel, "tag_key": "", "value": "x"}, 400, ruleTagKeyNotEmpty},
		{map[string]any{"release": rel, "tag_key": strings.Repeat("t", 165), "value": "x"}, 400, ""},
		{map[string]any{"release": rel, "tag_key": "big", "value": strings.Repeat("x", 1001)}, 400, ""},
		{map[string]any{"release": rel, "tag_key": "novalue"}, 500, ""},
		{map[string]any{"release": 999, "tag_key": "a", "value": "b"}, 409, "Data is referenced by release."},
		{map[string]any{"release": rel, "tag_key": "ok", "value": ""}, 201, ""},
	}
	for _, c := range cases {
		r := h.do("POST", "/v7/release_tag", h.key, c.body)
		if r.status != c.status || (c.msg != "" && r.str(t) != c.msg) {
			t.Errorf("POST tag %v: %s", c.body, r)
		}
	}
	d := h.get(fmt.Sprintf("/v7/release(%d)?$select=id&$expand=release_tag($select=tag_key,value;$orderby=tag_key asc)", rel))
	tags := d[0]["release_tag"].([]any)
	if len(tags) != 2 || tags[0].(map[string]any)["tag_key"] != "k" {
		t.Errorf("expanded tags: %v", tags)
	}
}

func TestFailedPostsUseIDs(t *testing.T) {
	h := newHarness(t)
	svc := h.serviceID("main")
	h.do("POST", "/v7/image", h.key, map[string]any{"is_a_build_of__service": svc, "start_timestamp": 1}) // 500
	h.do("POST", "/v7/image", h.key, map[string]any{"is_a_build_of__service": svc, "start_timestamp": 1, "status": "x"})
	if id := h.postImage(); id != 3 {
		t.Errorf("image id %d, want 3", id)
	}
}
