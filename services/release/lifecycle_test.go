package release

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
)

func TestReleaseSuccess(t *testing.T) {
	tests := []struct {
		name       string
		draft      bool
		finalize   bool
		wantFinal  bool
		wantTarget bool
	}{
		{name: "final release becomes the fleet target", wantFinal: true, wantTarget: true},
		{name: "draft stays a draft, not the target", draft: true},
		{name: "draft finalized after success becomes the target", draft: true, finalize: true, wantFinal: true, wantTarget: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, "genericx86-64-ext", nil)
			ctx := context.Background()
			created := h.createMain(t, tt.draft)
			if len(created.GetCommit()) != 32 || len(created.GetImages()) != 1 {
				t.Fatalf("created = %v", created)
			}
			img := created.GetImages()[0]
			if img.GetService() != "main" || !strings.HasPrefix(img.GetLocation(), testRegistry+"/v2/") {
				t.Errorf("image = %v", img)
			}
			rel, _ := h.api.Release(created.GetReleaseId())
			if rel.Status != "running" || rel.Source != "cloud" || rel.IsFinal == tt.draft {
				t.Errorf("created release: status %q source %q final %v", rel.Status, rel.Source, rel.IsFinal)
			}

			h.finishImageOK(t, img.GetImageId(), "Step 1/1 : FROM busybox\n")
			resp, err := h.srv.FinishRelease(ctx, &releasev1.FinishReleaseRequest{
				UserToken: h.key, ReleaseId: created.GetReleaseId(), Status: releasev1.Status_STATUS_SUCCESS, Finalize: tt.finalize,
			})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetStatus() != releasev1.Status_STATUS_SUCCESS {
				t.Errorf("FinishRelease status = %v", resp.GetStatus())
			}

			rel, _ = h.api.Release(created.GetReleaseId())
			if rel.Status != "success" || rel.EndTimestamp == nil || rel.IsFinal != tt.wantFinal {
				t.Errorf("release: status %q end %v final %v (want final %v)", rel.Status, rel.EndTimestamp, rel.IsFinal, tt.wantFinal)
			}
			target, ok := h.api.FleetTarget(h.fleet.ID)
			if isTarget := ok && target == created.GetReleaseId(); isTarget != tt.wantTarget {
				t.Errorf("fleet target = %d (%v), want this release: %v", target, ok, tt.wantTarget)
			}
			got, _ := h.api.Image(img.GetImageId())
			if got.Status != "success" || got.ContentHash != testDigest || got.PushTimestamp == nil || got.EndTimestamp == nil ||
				got.ImageSize != "41234567" || got.ProjectType != "Standard Dockerfile" || got.Dockerfile != "FROM busybox\n" ||
				got.BuildLog != "Step 1/1 : FROM busybox\n" || got.ErrorMessage != "" {
				t.Errorf("image = %+v", got)
			}
			st, err := h.srv.GetReleaseStatus(ctx, &releasev1.GetReleaseStatusRequest{UserToken: h.key, ReleaseId: created.GetReleaseId()})
			if err != nil || st.GetStatus() != "success" {
				t.Errorf("GetReleaseStatus = %v, %v", st, err)
			}
		})
	}
}

func TestCreateReleaseRecordsEverything(t *testing.T) {
	h := newHarness(t, "raspberrypi4-64", nil)
	var services []*releasev1.ServiceImage
	for i := range 6 {
		services = append(services, &releasev1.ServiceImage{
			Service:     fmt.Sprintf("svc%d", i),
			Labels:      map[string]string{"b": "2", "a": "1"},
			Environment: map[string]string{"Z": "z", "A": "a", "M": "m"},
		})
	}
	resp, err := h.srv.CreateRelease(context.Background(), &releasev1.CreateReleaseRequest{
		UserToken: h.key, FleetId: h.fleet.ID, Composition: defaultComposition(t), Services: services,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, img := range resp.GetImages() {
		if img.GetService() != services[i].GetService() {
			t.Errorf("images[%d] is %q, want the request's order", i, img.GetService())
		}
	}
	if n := len(h.api.Services()); n != 6 {
		t.Errorf("%d services", n)
	}
	if n := len(h.api.ReleaseImages()); n != 6 {
		t.Errorf("%d release images", n)
	}
	// Per release image, labels and variables are written in sorted order.
	labels := map[int64][]string{}
	for _, l := range h.api.ImageLabels() {
		labels[l.ReleaseImage] = append(labels[l.ReleaseImage], l.LabelName+"="+l.Value)
	}
	envs := map[int64][]string{}
	for _, e := range h.api.ImageEnvironmentVariables() {
		envs[e.ReleaseImage] = append(envs[e.ReleaseImage], e.Name)
	}
	for _, ri := range h.api.ReleaseImages() {
		if !slices.Equal(labels[ri.ID], []string{"a=1", "b=2"}) || !slices.Equal(envs[ri.ID], []string{"A", "M", "Z"}) {
			t.Errorf("release image %d: labels %v env %v", ri.ID, labels[ri.ID], envs[ri.ID])
		}
	}
}

func TestCreateReleaseFailureLeavesNothingRunning(t *testing.T) {
	h := newHarness(t, "genericx86-64-ext", nil)
	_, err := h.srv.CreateRelease(context.Background(), &releasev1.CreateReleaseRequest{
		UserToken: h.key, FleetId: h.fleet.ID, Composition: defaultComposition(t),
		Services: []*releasev1.ServiceImage{
			{Service: "main", Labels: defaultLabels()},
			// image_label.value is at most 300 characters: 400 midway.
			{Service: "other", Labels: map[string]string{"too-long": strings.Repeat("v", 301)}},
		},
	})
	wantCode(t, err, codes.InvalidArgument, `label "too-long"`)
	rels := h.api.Releases()
	if len(rels) != 1 || rels[0].Status != "failed" || rels[0].EndTimestamp == nil {
		t.Fatalf("releases = %+v", rels)
	}
	images := h.api.Images()
	if len(images) == 0 {
		t.Fatal("no image was created before the failure")
	}
	for _, img := range images {
		if img.Status != "failed" || img.EndTimestamp == nil || !strings.Contains(img.ErrorMessage, "release creation failed") {
			t.Errorf("image %d: status %q error %q", img.ID, img.Status, img.ErrorMessage)
		}
	}
	if _, ok := h.api.FleetTarget(h.fleet.ID); ok {
		t.Error("a failed release became the fleet target")
	}
}

func TestBuildFailure(t *testing.T) {
	h := newHarness(t, "genericx86-64-ext", nil)
	ctx := context.Background()
	created := h.createMain(t, false)
	imageID := created.GetImages()[0].GetImageId()
	_, err := h.srv.FinishImage(ctx, &releasev1.FinishImageRequest{
		UserToken: h.key, ImageId: imageID, Status: releasev1.Status_STATUS_FAILED,
		ErrorMessage: "RUN false: exit code 1", BuildLog: "Step 2/2 : RUN false\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.srv.FinishRelease(ctx, &releasev1.FinishReleaseRequest{
		UserToken: h.key, ReleaseId: created.GetReleaseId(), Status: releasev1.Status_STATUS_FAILED, Finalize: true,
	})
	if err != nil || resp.GetStatus() != releasev1.Status_STATUS_FAILED {
		t.Fatalf("FinishRelease = %v, %v", resp, err)
	}
	img, _ := h.api.Image(imageID)
	if img.Status != "failed" || img.ErrorMessage != "RUN false: exit code 1" || img.BuildLog != "Step 2/2 : RUN false\n" ||
		img.PushTimestamp != nil || img.ContentHash != "" {
		t.Errorf("image = %+v", img)
	}
	rel, _ := h.api.Release(created.GetReleaseId())
	if rel.Status != "failed" || rel.EndTimestamp == nil {
		t.Errorf("release: %q", rel.Status)
	}
	if _, ok := h.api.FleetTarget(h.fleet.ID); ok {
		t.Error("a failed release became the fleet target")
	}
}

func TestCancelByUserWins(t *testing.T) {
	h := newHarness(t, "genericx86-64-ext", nil)
	ctx := context.Background()
	created := h.createMain(t, false)
	id := created.GetReleaseId()
	// What balena-cli sends on Ctrl-C during a remote build.
	h.patchAsCLI(t, fmt.Sprintf("/v7/release(%d)?$filter=status%%20ne%%20'success'", id), `{"status":"cancelled","end_timestamp":1700000000000}`)

	h.finishImageOK(t, created.GetImages()[0].GetImageId(), "")
	resp, err := h.srv.FinishRelease(ctx, &releasev1.FinishReleaseRequest{
		UserToken: h.key, ReleaseId: id, Status: releasev1.Status_STATUS_SUCCESS, Finalize: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != releasev1.Status_STATUS_CANCELLED {
		t.Errorf("FinishRelease status = %v, want CANCELLED", resp.GetStatus())
	}
	rel, _ := h.api.Release(id)
	if rel.Status != "cancelled" {
		t.Errorf("release status = %q, want cancelled", rel.Status)
	}
	if _, ok := h.api.FleetTarget(h.fleet.ID); ok {
		t.Error("a cancelled release became the fleet target")
	}
	st, _ := h.srv.GetReleaseStatus(ctx, &releasev1.GetReleaseStatusRequest{UserToken: h.key, ReleaseId: id})
	if st.GetStatus() != "cancelled" {
		t.Errorf("GetReleaseStatus = %q", st.GetStatus())
	}
}

func TestBigBuildLogKeepsTail(t *testing.T) {
	h := newHarness(t, "genericx86-64-ext", nil)
	created := h.createMain(t, false)
	var b strings.Builder
	for i := 0; b.Len() < 650_000; i++ {
		fmt.Fprintf(&b, "\x1b[32mStep %07d\x1b[0m : RUN echo \"<some output>\"\n", i)
	}
	log := b.String()
	imageID := created.GetImages()[0].GetImageId()
	h.finishImageOK(t, imageID, log) // a 413 would fail here

	img, _ := h.api.Image(imageID)
	if img.Status != "success" {
		t.Fatalf("image status %q", img.Status)
	}
	kept, ok := strings.CutPrefix(img.BuildLog, "[truncated]\n")
	if !ok {
		t.Fatalf("build_log starts %q", img.BuildLog[:40])
	}
	if !strings.HasSuffix(log, kept) || !strings.HasPrefix(kept, "\x1b[32mStep ") {
		t.Error("build_log is not the tail of the log, cut at a line")
	}
	if len(img.BuildLog) > DefaultMaxLogBytes || len(kept) < 100_000 {
		t.Errorf("build_log is %d bytes", len(img.BuildLog))
	}
}

func TestFinishValidation(t *testing.T) {
	h := newHarness(t, "genericx86-64-ext", nil)
	ctx := context.Background()
	tests := []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"image without status", func() error {
			_, err := h.srv.FinishImage(ctx, &releasev1.FinishImageRequest{UserToken: h.key, ImageId: 1})
			return err
		}, codes.InvalidArgument},
		{"success without digest", func() error {
			_, err := h.srv.FinishImage(ctx, &releasev1.FinishImageRequest{UserToken: h.key, ImageId: 1, Status: releasev1.Status_STATUS_SUCCESS})
			return err
		}, codes.InvalidArgument},
		{"release without token", func() error {
			_, err := h.srv.FinishRelease(ctx, &releasev1.FinishReleaseRequest{ReleaseId: 1, Status: releasev1.Status_STATUS_SUCCESS})
			return err
		}, codes.Unauthenticated},
		{"unknown release", func() error {
			_, err := h.srv.FinishRelease(ctx, &releasev1.FinishReleaseRequest{UserToken: h.key, ReleaseId: 999, Status: releasev1.Status_STATUS_SUCCESS})
			return err
		}, codes.NotFound},
		{"create with bad token", func() error {
			_, err := h.srv.CreateRelease(ctx, &releasev1.CreateReleaseRequest{UserToken: "nope", FleetId: h.fleet.ID,
				Services: []*releasev1.ServiceImage{{Service: "main"}}})
			return err
		}, codes.Unauthenticated},
		{"create twice the same service", func() error {
			_, err := h.srv.CreateRelease(ctx, &releasev1.CreateReleaseRequest{UserToken: h.key, FleetId: h.fleet.ID,
				Services: []*releasev1.ServiceImage{{Service: "main"}, {Service: "main"}}})
			return err
		}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantCode(t, tt.call(), tt.code, "") })
	}
}

func TestCreateReleaseCallerGoneLeavesNothingRunning(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The caller goes away while the labels are being written.
	h := newHarness(t, "genericx86-64-ext", func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v7/image_label" {
				cancel()
			}
			next.ServeHTTP(w, r)
		})
	})
	_, err := h.srv.CreateRelease(ctx, &releasev1.CreateReleaseRequest{
		UserToken: h.key, FleetId: h.fleet.ID, Composition: defaultComposition(t),
		Services: []*releasev1.ServiceImage{{Service: "main", Labels: defaultLabels()}},
	})
	wantCode(t, err, codes.Canceled, "")
	if len(h.api.Images()) == 0 || len(h.api.Releases()) == 0 {
		t.Fatal("the cancel came before anything was created")
	}
	for _, rel := range h.api.Releases() {
		if rel.Status != "failed" {
			t.Errorf("release %d is %q", rel.ID, rel.Status)
		}
	}
	for _, img := range h.api.Images() {
		if img.Status != "failed" {
			t.Errorf("image %d is %q", img.ID, img.Status)
		}
	}
}

// TestCreateReleaseSiblingFailureMidPOST: one service fails while another's
// POST /v7/image is in flight; that image is created all the same, so it
// must be learnt and marked failed too.
func TestCreateReleaseSiblingFailureMidPOST(t *testing.T) {
	failed := make(chan struct{})
	var imagePosts, labelPosts atomic.Int32
	h := newHarness(t, "genericx86-64-ext", func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.Method == http.MethodPost && r.URL.Path == "/v7/image" && imagePosts.Add(1) == 1:
				// The API has the request, then is slow: it answers only once the
				// sibling has failed and this caller gave up (or, when it does
				// not give up, a moment after).
				body, _ := io.ReadAll(r.Body)
				r.Body = io.NopCloser(bytes.NewReader(body))
				<-failed
				select {
				case <-r.Context().Done():
				case <-time.After(200 * time.Millisecond):
				}
			case r.Method == http.MethodPost && r.URL.Path == "/v7/image_label" && labelPosts.Add(1) == 1:
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(w, `"injected failure"`)
				close(failed)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	_, err := h.srv.CreateRelease(context.Background(), &releasev1.CreateReleaseRequest{
		UserToken: h.key, FleetId: h.fleet.ID,
		Services: []*releasev1.ServiceImage{
			{Service: "one", Labels: map[string]string{"a": "1"}},
			{Service: "two", Labels: map[string]string{"a": "1"}},
		},
	})
	wantCode(t, err, codes.InvalidArgument, "injected failure")
	images := h.api.Images()
	if len(images) != 2 {
		t.Fatalf("%d images, want both POSTs to have landed", len(images))
	}
	for _, img := range images {
		if img.Status != "failed" {
			t.Errorf("image %d is %q", img.ID, img.Status)
		}
	}
}
