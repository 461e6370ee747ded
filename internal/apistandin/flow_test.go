package apistandin

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestDeployFlow walks the requests of a cloud build (balena-cli deploy /
// @balena/compose release api, reference §2) with the user's API key.
func TestDeployFlow(t *testing.T) {
	h := newHarness(t)
	d := h.get("/v7/application?$filter=is_directly_accessible_by__user/any(dau:1 eq 1) and (slug eq 'admin/amd64fleet' or uuid eq 'admin/amd64fleet')&$select=slug")
	if len(d) != 1 || d[0]["slug"] != "admin/amd64fleet" || len(d[0]) != 1 {
		t.Fatalf("fleet lookup: %v", d)
	}
	rel := h.mustPost("release", h.releaseBody(map[string]any{"is_final": true, "semver": "1.0.0", "is_created_by__user": 1}))
	svc := h.serviceID("main")
	r := h.do("POST", "/v7/image", h.key, map[string]any{"is_a_build_of__service": svc, "status": "running", "start_timestamp": h.clock.UnixMilli()})
	img := r.obj(t)
	imgID := int64(img["id"].(float64))
	location := img["is_stored_at__image_location"].(string)
	ri := h.mustPost("image__is_part_of__release", map[string]any{"is_part_of__release": rel, "image": imgID})
	h.mustPost("image_label", map[string]any{"release_image": ri, "label_name": "io.balena.features.supervisor-api", "value": "1"})
	h.mustPost("image_environment_variable", map[string]any{"release_image": ri, "name": "A", "value": "b"})

	repo := strings.TrimPrefix(location, testRegistry+"/")
	_, jwt := h.token("Bearer "+h.key, "service="+testRegistry+"&scope=repository:"+repo+":pull,push")
	if got := accessString(jwt.claims.Access); got != repo+"=pull,push" {
		t.Fatalf("push token: %s", got)
	}
	if _, ok := h.s.FleetTarget(h.fleet.ID); ok {
		t.Fatal("target set while building")
	}

	h.tick(time.Minute)
	h.mustPatch(fmt.Sprintf("/v7/image(%d)", imgID), map[string]any{
		"end_timestamp": h.clock.UnixMilli(), "project_type": "Standard Dockerfile", "build_log": "ok",
		"push_timestamp": h.clock.UnixMilli(), "status": "success", "content_hash": "sha256:" + strings.Repeat("0", 64),
		"dockerfile": "FROM busybox", "image_size": "523",
	})
	h.mustPatch(fmt.Sprintf("/v7/release(%d)", rel), map[string]any{"status": "success", "end_timestamp": h.clock.UnixMilli()})
	if h.target() != rel {
		t.Fatalf("target %d, want %d", h.target(), rel)
	}
	// balena-cli then applies --release-tag and --note.
	h.mustPost("release_tag", map[string]any{"release": rel, "tag_key": "env", "value": "prod"})
	if d := h.get(fmt.Sprintf("/v7/release(%d)?$select=id", rel)); len(d) != 1 || len(d[0]) != 1 {
		t.Fatalf("note lookup: %v", d)
	}
	h.mustPatch(fmt.Sprintf("/v7/release(%d)", rel), map[string]any{"note": "shipped"})

	got := h.release(rel)
	if got.Status != "success" || got.Semver != "1.0.0" || !got.IsFinal || got.Note != "shipped" || got.EndTimestamp == nil {
		t.Errorf("release: %+v", got)
	}
	if i, _ := h.s.Image(imgID); i.Status != "success" || i.ImageSize != "523" || i.Location != location {
		t.Errorf("image: %+v", i)
	}
	if n := len(h.s.ReleaseTags()) + len(h.s.ImageLabels()) + len(h.s.ImageEnvironmentVariables()); n != 3 {
		t.Errorf("%d tag/label/env rows", n)
	}
}
