// Package delta is a client of open-balena-delta's v3 API: it asks the
// delta server for a balena-engine delta between two images of the
// openBalena registry and waits for it.
//
//	GET <DELTA_HOST>/api/v3/delta?src=<image>&dest=<image>&wait=true
//	Authorization: Bearer <registry token with pull on both repositories>
//	200 {"name": "<registry>/v2/<dest hash>:delta-<src hash[:16]>"}
//
// The server answers 504 (or a proxy 502/504) while a delta is still being
// made; the client asks again until its context ends. Any other answer is
// an error with the server's message.
package delta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/open-balena-builder/builder/platform/redact"
)

// Client talks to one delta server.
type Client struct {
	base  *url.URL
	http  *http.Client
	retry time.Duration
}

// New returns a client of the delta server at baseURL (https://delta.<tld>).
func New(baseURL string, httpClient *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("DELTA_HOST %q is not a host or http(s) URL", baseURL)
	}
	if httpClient == nil {
		httpClient = &http.Client{}
	}
	return &Client{base: u, http: httpClient, retry: 2 * time.Second}, nil
}

// ErrStillProcessing: the server is still making the delta (502/504).
var ErrStillProcessing = errors.New("the delta server is still making the delta")

// Delta asks for the delta from src to dest (full image names, with or
// without @digest) and returns the delta image's name. It waits, asking
// again while the server says it is still working, until ctx ends.
func (c *Client) Delta(ctx context.Context, token, src, dest string) (string, error) {
	for {
		name, err := c.once(ctx, token, src, dest)
		if !errors.Is(err, ErrStillProcessing) {
			return name, err
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w (gave up: %v)", err, context.Cause(ctx))
		case <-time.After(c.retry):
		}
	}
}

func (c *Client) once(ctx context.Context, token, src, dest string) (string, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/v3/delta"
	u.RawQuery = url.Values{"src": {src}, "dest": {dest}, "wait": {"true"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("delta server: %w", context.Cause(ctx))
		}
		return "", fmt.Errorf("delta server unreachable: %w", scrub(err, token))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusOK:
		var out struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(body, &out); err != nil || out.Name == "" {
			return "", fmt.Errorf("delta server: 200 without a delta name: %q", short(body))
		}
		return out.Name, nil
	case resp.StatusCode == http.StatusGatewayTimeout || resp.StatusCode == http.StatusBadGateway:
		return "", ErrStillProcessing
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return "", fmt.Errorf("delta server refused the registry token (%d): does it trust open-balena-api's token key?", resp.StatusCode)
	default:
		return "", fmt.Errorf("delta server: %d %s", resp.StatusCode, short(body))
	}
}

func short(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// scrub keeps the token out of an error that quotes the request.
func scrub(err error, token string) error {
	if token == "" || !strings.Contains(err.Error(), token) {
		return err
	}
	return errors.New(redact.Values(err.Error(), token))
}
