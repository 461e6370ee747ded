package release

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"

	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
)

func TestAuthorize(t *testing.T) {
	tests := []struct {
		name       string
		deviceType string
		token      string // "" means the user's key
		slug       string // "" means the fleet's slug
		wantCode   codes.Code
		wantMsg    string
		wantArch   string
	}{
		{name: "aarch64 fleet", deviceType: "raspberrypi4-64", wantArch: "aarch64"},
		{name: "amd64 fleet", deviceType: "genericx86-64-ext", wantArch: "amd64"},
		{name: "slug case does not matter", deviceType: "genericx86-64-ext", slug: "Admin/TestFleet", wantArch: "amd64"},
		{name: "bad token", deviceType: "genericx86-64-ext", token: "not-a-key",
			wantCode: codes.Unauthenticated, wantMsg: "invalid or expired token: log in again with `balena login`"},
		{name: "unknown fleet", deviceType: "genericx86-64-ext", slug: "admin/nope",
			wantCode: codes.NotFound, wantMsg: `fleet "admin/nope" not found, or you cannot access it`},
		{name: "no slug", deviceType: "genericx86-64-ext", slug: " ", wantCode: codes.InvalidArgument, wantMsg: "slug"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.deviceType, nil)
			token, slug := h.key, h.fleet.Slug
			if tt.token != "" {
				token = tt.token
			}
			if tt.slug != "" {
				slug = tt.slug
			}
			resp, err := h.srv.Authorize(context.Background(), &releasev1.AuthorizeRequest{UserToken: token, Slug: slug})
			if tt.wantCode != codes.OK {
				wantCode(t, err, tt.wantCode, tt.wantMsg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f := resp.GetFleet()
			if f.GetId() != h.fleet.ID || f.GetSlug() != "admin/testfleet" || f.GetAppName() != "testfleet" ||
				f.GetDeviceType() != tt.deviceType || f.GetArch() != tt.wantArch {
				t.Errorf("fleet = %v", f)
			}
			if resp.GetUser().GetUsername() != "admin" || resp.GetUser().GetId() == 0 {
				t.Errorf("user = %v", resp.GetUser())
			}
		})
	}
}
