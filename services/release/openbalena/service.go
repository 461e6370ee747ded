package openbalena

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

type idRow struct {
	ID int64 `json:"id"`
}

// GetOrCreateService returns the id of the fleet's service named name,
// creating it when absent. Concurrent pushes to one fleet race here: the
// loser's POST gets 409 (unique application+service_name) and reads the
// winner's row.
func (c *Client) GetOrCreateService(ctx context.Context, token string, fleetID int64, name string) (int64, error) {
	if id, ok, err := c.findService(ctx, token, fleetID, name); err != nil || ok {
		return id, err
	}
	var created idRow
	err := c.do(ctx, call{
		method: http.MethodPost,
		path:   "/v7/service",
		body:   map[string]any{"application": fleetID, "service_name": name},
		creds:  bearer(token),
	}, &created)
	var apiErr *APIError
	switch {
	case err == nil && created.ID != 0:
		return created.ID, nil
	case err == nil:
		return 0, fmt.Errorf("open-balena-api POST /v7/service: answer has no id")
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusConflict:
		id, ok, ferr := c.findService(ctx, token, fleetID, name)
		if ferr != nil {
			return 0, ferr
		}
		if !ok {
			return 0, fmt.Errorf("service %q of fleet %d: created concurrently but not readable: %w", name, fleetID, err)
		}
		return id, nil
	default:
		return 0, err
	}
}

func (c *Client) findService(ctx context.Context, token string, fleetID int64, name string) (int64, bool, error) {
	var rows list[idRow]
	err := c.do(ctx, call{
		method: http.MethodGet,
		path:   "/v7/service(application=" + strconv.FormatInt(fleetID, 10) + ",service_name=" + keyString(name) + ")",
		query:  []param{{"$select", "id"}},
		creds:  bearer(token),
	}, &rows)
	if err != nil || len(rows.D) == 0 {
		return 0, false, err
	}
	return rows.D[0].ID, true, nil
}
