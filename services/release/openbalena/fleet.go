package openbalena

import (
	"context"
	"fmt"
	"net/http"
)

// Fleet is an application row with its device type and CPU architecture.
type Fleet struct {
	ID         int64
	Slug       string
	AppName    string
	DeviceType string // e.g. raspberrypi4-64
	Arch       string // e.g. aarch64, amd64
}

type slugRow struct {
	Slug string `json:"slug"`
}

type deviceTypeRow struct {
	Slug string    `json:"slug"`
	Arch []slugRow `json:"is_of__cpu_architecture"`
}

type fleetRow struct {
	ID         int64           `json:"id"`
	Slug       string          `json:"slug"`
	AppName    string          `json:"app_name"`
	DeviceType []deviceTypeRow `json:"is_for__device_type"`
}

// FleetBySlug reads the fleet "org/app" with its device type and CPU
// architecture. A fleet the token cannot read looks absent (the API answers
// an empty list), so both give an error wrapping ErrFleetNotFound.
func (c *Client) FleetBySlug(ctx context.Context, token, slug string) (Fleet, error) {
	var rows list[fleetRow]
	err := c.do(ctx, call{
		method: http.MethodGet,
		path:   "/v7/application",
		query: []param{
			{"$filter", "slug eq " + quote(slug)},
			{"$select", "id,slug,app_name"},
			{"$expand", "is_for__device_type($select=slug;$expand=is_of__cpu_architecture($select=slug))"},
		},
		creds: bearer(token),
	}, &rows)
	if err != nil {
		return Fleet{}, err
	}
	if len(rows.D) == 0 {
		return Fleet{}, fmt.Errorf("fleet %q: %w", slug, ErrFleetNotFound)
	}
	r := rows.D[0]
	f := Fleet{ID: r.ID, Slug: r.Slug, AppName: r.AppName}
	if len(r.DeviceType) > 0 {
		f.DeviceType = r.DeviceType[0].Slug
		if len(r.DeviceType[0].Arch) > 0 {
			f.Arch = r.DeviceType[0].Arch[0].Slug
		}
	}
	return f, nil
}
