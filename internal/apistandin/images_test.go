package apistandin

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func TestPostImage(t *testing.T) {
	h := newHarness(t)
	svc := h.serviceID("main")
	r := h.do("POST", "/v7/image", h.key, map[string]any{
		"is_a_build_of__service": svc, "status": "running", "start_timestamp": h.clock.UnixMilli(),
		"is_stored_at__image_location": "evil.example/v2/mine", "contract": map[string]any{"type": "sw.container"},
	})
	if r.status != 201 {
		t.Fatalf("POST image: %s", r)
	}
	m := r.obj(t)
	loc, _ := m["is_stored_at__image_location"].(string)
	if !regexp.MustCompile(`^` + regexp.QuoteMeta(testRegistry) + `/v2/[0-9a-f]{32}$`).MatchString(loc) {
		t.Errorf("location %q", loc)
	}
	for k, want := range map[string]any{
		"status": "running", "image_size": nil, "push_timestamp": nil, "content_hash": nil, "project_type": nil,
		"end_timestamp": nil, "dockerfile": nil, "error_message": nil, "build_log": nil,
	} {
		if v, ok := m[k]; !ok || v != want {
			t.Errorf("%s = %#v (present %v)", k, v, ok)
		}
	}
	if fk := m["is_a_build_of__service"].(map[string]any); fk["__id"] != float64(svc) {
		t.Errorf("service FK: %v", fk)
	}
	id := int64(m["id"].(float64))
	if r.header.Get("Location") != fmt.Sprintf("/v7/image(@id)?@id=%d", id) {
		t.Errorf("location header %q", r.header.Get("Location"))
	}
	img, ok := h.s.Image(id)
	if !ok || img.Location != loc || img.Service != svc || string(img.Contract) != `{"type":"sw.container"}` {
		t.Errorf("snapshot: %+v", img)
	}
	other := h.postImage()
	if o, _ := h.s.Image(other); o.Location == loc {
		t.Error("locations must differ")
	}
	if d := h.get(fmt.Sprintf("/v7/image(%d)?$select=is_stored_at__image_location", id)); d[0]["is_stored_at__image_location"] != loc {
		t.Errorf("GET image: %v", d)
	}
}

func TestImageValidation(t *testing.T) {
	h := newHarness(t)
	svc := h.serviceID("main")
	base := func(extra map[string]any) map[string]any {
		b := map[string]any{"is_a_build_of__service": svc, "status": "running", "start_timestamp": h.clock.UnixMilli()}
		for k, v := range extra {
			if v == nil {
				delete(b, k)
			} else {
				b[k] = v
			}
		}
		return b
	}
	push := h.clock.UnixMilli()
	cases := []struct {
		name   string
		body   map[string]any
		status int
		msg    string // JSON string body, or "" for none/unchecked
	}{
		{"missing status", base(map[string]any{"status": nil}), 500, ""},
		{"missing start", base(map[string]any{"start_timestamp": nil}), 500, ""},
		{"missing service", base(map[string]any{"is_a_build_of__service": nil}), 500, ""},
		{"bad status", base(map[string]any{"status": "ok"}), 400, "Check constraint violated"},
		{"bad project type", base(map[string]any{"project_type": "Makefile"}), 400, "Check constraint violated"},
		{"project type", base(map[string]any{"project_type": "Dockerfile.template"}), 201, ""},
		{"success without push", base(map[string]any{"status": "success"}), 400, ruleImagePushTimestamp},
		{"success with push", base(map[string]any{"status": "success", "push_timestamp": push}), 201, ""},
		{"unknown service", base(map[string]any{"is_a_build_of__service": 999}), 409, "Data is referenced by is_a_build_of__service."},
		{"size as number", base(map[string]any{"image_size": 41}), 201, ""},
		{"size as string", base(map[string]any{"image_size": "75123123123"}), 201, ""},
		{"size not a number", base(map[string]any{"image_size": "big"}), 400, `"image_size" Cannot convert big to a BigInt`},
		{"size fraction", base(map[string]any{"image_size": 1.5}), 400, `"image_size" The number 1.5 cannot be converted to a BigInt because it is not an integer`},
		{"long content hash", base(map[string]any{"content_hash": "sha256:" + strings.Repeat("a", 65)}), 400,
			"It is necessary that each image that has a content hash, has a content hash that has a Length (Type) that is less than or equal to 71."},
		{"long error message", base(map[string]any{"error_message": strings.Repeat("e", 300001)}), 400,
			"It is necessary that each image that has an error message, has an error message that has a Length (Type) that is less than or equal to 300000."},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.do("POST", "/v7/image", h.key, c.body)
			if r.status != c.status {
				t.Fatalf("status: %s", r)
			}
			if c.status == 500 && len(r.body) != 0 {
				t.Errorf("500 must have an empty body: %s", r)
			}
			if c.msg != "" && r.str(t) != c.msg {
				t.Errorf("body %q, want %q", r.str(t), c.msg)
			}
		})
	}
	sizes := map[string]bool{}
	for _, img := range h.s.Images() {
		if img.ImageSize != "" {
			sizes[img.ImageSize] = true
			if img.Raw["image_size"] != img.ImageSize {
				t.Errorf("image_size must render as a string: %#v", img.Raw["image_size"])
			}
		}
	}
	if !sizes["41"] || !sizes["75123123123"] {
		t.Errorf("sizes: %v", sizes)
	}
}

func TestPatchImage(t *testing.T) {
	h := newHarness(t)
	id := h.postImage()
	path := fmt.Sprintf("/v7/image(%d)", id)

	r := h.do("PATCH", path, h.key, map[string]any{"status": "success"})
	if r.status != 400 || r.str(t) != ruleImagePushTimestamp {
		t.Fatalf("success without push: %s", r)
	}
	// The rule is checked on the merged row: push_timestamp set earlier counts.
	h.mustPatch(path, map[string]any{"push_timestamp": h.clock.UnixMilli()})
	h.mustPatch(path, map[string]any{
		"status": "success", "content_hash": "sha256:" + strings.Repeat("a", 64), "image_size": "1234",
		"end_timestamp": h.clock.UnixMilli(), "project_type": "Standard Dockerfile", "dockerfile": "FROM scratch",
		"build_log": "Step 1/1", "error_message": nil,
	})
	img, _ := h.s.Image(id)
	if img.Status != "success" || img.ImageSize != "1234" || img.ProjectType != "Standard Dockerfile" ||
		img.Dockerfile != "FROM scratch" || img.PushTimestamp == nil || img.EndTimestamp == nil || img.BuildLog != "Step 1/1" {
		t.Errorf("patched image: %+v", img)
	}
	// Clearing push_timestamp of a successful image is refused.
	r = h.do("PATCH", path, h.key, map[string]any{"push_timestamp": nil})
	if r.status != 400 || r.str(t) != ruleImagePushTimestamp {
		t.Errorf("clearing push_timestamp: %s", r)
	}
	h.mustPatch("/v7/image(424242)", map[string]any{"status": "failed"})
	h.mustPatch(path+"?$filter=status eq 'running'", map[string]any{"status": "failed"})
	if img, _ := h.s.Image(id); img.Status != "success" {
		t.Errorf("filtered PATCH applied: %s", img.Status)
	}
}
