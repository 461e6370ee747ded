package release

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"

	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
)

// failFirst answers 503 to the first n requests, then passes them on.
func failFirst(n int32, count *atomic.Int32) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if count.Add(1) <= n {
				http.Error(w, "upstream down", http.StatusServiceUnavailable)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func TestRetriesThroughFlakyProxy(t *testing.T) {
	var count atomic.Int32
	h := newHarness(t, "raspberrypi4-64", failFirst(2, &count))
	resp, err := h.srv.Authorize(context.Background(), &releasev1.AuthorizeRequest{UserToken: h.key, Slug: h.fleet.Slug})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetFleet().GetArch() != "aarch64" {
		t.Errorf("fleet = %v", resp.GetFleet())
	}
	if got := count.Load(); got != 4 { // 2 failures, whoami, fleet
		t.Errorf("%d requests, want 4", got)
	}
}

func TestAPIDownIsUnavailable(t *testing.T) {
	var count atomic.Int32
	h := newHarness(t, "genericx86-64-ext", failFirst(1000, &count))
	_, err := h.srv.Authorize(context.Background(), &releasev1.AuthorizeRequest{UserToken: h.key, Slug: h.fleet.Slug})
	wantCode(t, err, codes.Unavailable, "unavailable")
	if got := count.Load(); got != 5 {
		t.Errorf("%d tries, want 5", got)
	}
}

func TestTokensNeverInErrors(t *testing.T) {
	const userToken = "user-secret-token-abcdefghijklmnop"
	// An API that echoes the credentials back in its errors.
	echo := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/v7/image") || r.URL.Path == "/auth/v1/token" {
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprintf(w, "%q", "bad request from "+r.Header.Get("Authorization")+" "+testBuilderToken)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	h := newHarness(t, "genericx86-64-ext", echo)
	ctx := context.Background()
	calls := map[string]func() error{
		"authorize bad token": func() error {
			_, err := h.srv.Authorize(ctx, &releasev1.AuthorizeRequest{UserToken: userToken, Slug: h.fleet.Slug})
			return err
		},
		"create bad token": func() error {
			_, err := h.srv.CreateRelease(ctx, &releasev1.CreateReleaseRequest{UserToken: userToken, FleetId: h.fleet.ID,
				Services: []*releasev1.ServiceImage{{Service: "main"}}})
			return err
		},
		"create echoed": func() error {
			_, err := h.srv.CreateRelease(ctx, &releasev1.CreateReleaseRequest{UserToken: h.key, FleetId: h.fleet.ID,
				Services: []*releasev1.ServiceImage{{Service: "main"}}})
			return err
		},
		"finish image echoed": func() error {
			_, err := h.srv.FinishImage(ctx, &releasev1.FinishImageRequest{UserToken: userToken, ImageId: 1,
				Status: releasev1.Status_STATUS_FAILED, ErrorMessage: "token " + userToken})
			return err
		},
		"registry token echoed": func() error {
			h.jobs.run("1/main", "t", testRegistry+"/v2/ab")
			_, err := h.srv.RegistryToken(ctx, &releasev1.RegistryTokenRequest{JobId: "1/main", Ticket: "t"})
			return err
		},
		"finish release bad token": func() error {
			_, err := h.srv.FinishRelease(ctx, &releasev1.FinishReleaseRequest{UserToken: userToken, ReleaseId: 1,
				Status: releasev1.Status_STATUS_SUCCESS})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			if err == nil {
				t.Fatal("want an error")
			}
			for _, secret := range []string{userToken, h.key, testBuilderToken} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q holds a token", err)
				}
			}
		})
	}
	// The half-created release's images got an error_message without tokens.
	for _, img := range h.api.Images() {
		if strings.Contains(img.ErrorMessage, h.key) || strings.Contains(img.ErrorMessage, testBuilderToken) {
			t.Errorf("image %d error_message holds a token", img.ID)
		}
	}
}
