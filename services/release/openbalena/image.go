package openbalena

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
)

// Image is a created image row.
type Image struct {
	ID int64 `json:"id"`
	// Location is "<registry>/v2/<hash>", assigned by the API on POST.
	Location string `json:"is_stored_at__image_location"`
}

// CreateImage POSTs a running image of a service. contract (nil: none) is
// the sw.container contract from the service's labels.
func (c *Client) CreateImage(ctx context.Context, token string, serviceID int64, contract map[string]any) (Image, error) {
	body := map[string]any{
		"is_a_build_of__service": serviceID,
		"status":                 StatusRunning,
		"start_timestamp":        epochMS(c.now()),
	}
	if contract != nil {
		body["contract"] = contract
	}
	var img Image
	if err := c.do(ctx, call{method: http.MethodPost, path: "/v7/image", body: body, creds: bearer(token)}, &img); err != nil {
		return Image{}, err
	}
	if img.ID == 0 || img.Location == "" {
		return Image{}, fmt.Errorf("open-balena-api POST /v7/image: answer has no id or location")
	}
	return img, nil
}

// AddImageToRelease links an image to a release and returns the link's id
// (the release_image that labels and environment variables hang off).
func (c *Client) AddImageToRelease(ctx context.Context, token string, imageID, releaseID int64) (int64, error) {
	var row idRow
	err := c.do(ctx, call{
		method: http.MethodPost,
		path:   "/v7/image__is_part_of__release",
		body:   map[string]any{"image": imageID, "is_part_of__release": releaseID},
		creds:  bearer(token),
	}, &row)
	if err == nil && row.ID == 0 {
		err = fmt.Errorf("open-balena-api POST /v7/image__is_part_of__release: answer has no id")
	}
	return row.ID, err
}

// AddImageLabel POSTs one image_label of a release image.
func (c *Client) AddImageLabel(ctx context.Context, token string, releaseImageID int64, name, value string) error {
	return c.do(ctx, call{
		method: http.MethodPost,
		path:   "/v7/image_label",
		body:   map[string]any{"release_image": releaseImageID, "label_name": name, "value": value},
		creds:  bearer(token),
	}, nil)
}

// AddImageEnv POSTs one image_environment_variable of a release image.
func (c *Client) AddImageEnv(ctx context.Context, token string, releaseImageID int64, name, value string) error {
	return c.do(ctx, call{
		method: http.MethodPost,
		path:   "/v7/image_environment_variable",
		body:   map[string]any{"release_image": releaseImageID, "name": name, "value": value},
		creds:  bearer(token),
	}, nil)
}

// PatchImage PATCHes /v7/image(<id>) with the fields set in p.
func (c *Client) PatchImage(ctx context.Context, token string, id int64, p ImagePatch) error {
	return c.do(ctx, call{
		method: http.MethodPatch,
		path:   "/v7/image(" + strconv.FormatInt(id, 10) + ")",
		body:   p.body(),
		creds:  bearer(token),
	}, nil)
}
