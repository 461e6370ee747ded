package openbalena

import (
	"context"
	"net/http"
)

// Actor is GET /actor/v1/whoami: who a token belongs to.
type Actor struct {
	// ID is the actor id; ActorTypeID the user (or device, fleet) id.
	ID          int64  `json:"id"`
	ActorType   string `json:"actorType"` // "user", "device" or "application"
	ActorTypeID int64  `json:"actorTypeId"`
	Username    string `json:"username,omitempty"`
	Email       string `json:"email,omitempty"`
}

// WhoAmI checks token. A bad or expired token gives an error wrapping
// ErrUnauthorized.
func (c *Client) WhoAmI(ctx context.Context, token string) (Actor, error) {
	var a Actor
	err := c.do(ctx, call{method: http.MethodGet, path: "/actor/v1/whoami", creds: bearer(token)}, &a)
	return a, err
}
