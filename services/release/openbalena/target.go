package openbalena

import (
	"context"
	"net/http"
	"strconv"
)

// ImageOfService is one image of a release: where it is stored, its
// digest and the service it builds.
type ImageOfService struct {
	ID          int64
	Service     string
	Location    string // registry2.<tld>/v2/<hash>
	ContentHash string // sha256:...; empty until pushed
	Status      string
}

// FleetTarget reads the fleet's target release (should_be_running__release);
// ok is false when it has none.
func (c *Client) FleetTarget(ctx context.Context, token string, fleetID int64) (id int64, ok bool, err error) {
	var rows list[struct {
		Target []struct {
			ID int64 `json:"id"`
		} `json:"should_be_running__release"`
	}]
	err = c.do(ctx, call{
		method: http.MethodGet,
		path:   "/v7/application(" + strconv.FormatInt(fleetID, 10) + ")",
		query:  []param{{"$select", "id"}, {"$expand", "should_be_running__release($select=id)"}},
		creds:  bearer(token),
	}, &rows)
	if err != nil || len(rows.D) == 0 || len(rows.D[0].Target) == 0 {
		return 0, false, err
	}
	return rows.D[0].Target[0].ID, true, nil
}

// ReleaseImages reads a release's images with their services.
func (c *Client) ReleaseImages(ctx context.Context, token string, releaseID int64) ([]ImageOfService, error) {
	var rows list[struct {
		Images []struct {
			Image []struct {
				ID          int64  `json:"id"`
				Location    string `json:"is_stored_at__image_location"`
				ContentHash string `json:"content_hash"`
				Status      string `json:"status"`
				Service     []struct {
					Name string `json:"service_name"`
				} `json:"is_a_build_of__service"`
			} `json:"image"`
		} `json:"release_image"`
	}]
	err := c.do(ctx, call{
		method: http.MethodGet,
		path:   "/v7/release(" + strconv.FormatInt(releaseID, 10) + ")",
		query: []param{{"$select", "id"}, {"$expand", "release_image($select=id;$expand=image($select=id,is_stored_at__image_location,content_hash,status;" +
			"$expand=is_a_build_of__service($select=service_name)))"}},
		creds: bearer(token),
	}, &rows)
	if err != nil || len(rows.D) == 0 {
		return nil, err
	}
	var out []ImageOfService
	for _, ri := range rows.D[0].Images {
		for _, img := range ri.Image {
			o := ImageOfService{ID: img.ID, Location: img.Location, ContentHash: img.ContentHash, Status: img.Status}
			if len(img.Service) > 0 {
				o.Service = img.Service[0].Name
			}
			out = append(out, o)
		}
	}
	return out, nil
}
