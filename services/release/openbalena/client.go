// Package openbalena is a small typed client for the parts of
// open-balena-api v7 a build server needs: whoami, fleets, releases,
// services, images and the registry token endpoint.
//
// open-balena-api has no builder API key: every OData call carries the
// pushing user's own token, passed per call. The builder token is used only
// at /auth/v1/token. Neither ever appears in an error or a log line.
package openbalena

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/open-balena-builder/builder/platform/redact"
)

const (
	maxErrorBody   = 64 << 10
	maxSuccessBody = 16 << 20
	maxMessage     = 2000
)

// Client talks to one open-balena-api. It is safe for concurrent use.
type Client struct {
	base  string
	http  *http.Client
	log   *slog.Logger
	retry RetryPolicy
	now   func() time.Time
}

// Option changes a Client made by New.
type Option func(*Client)

// WithRetry replaces DefaultRetry.
func WithRetry(p RetryPolicy) Option {
	return func(c *Client) {
		if p.Attempts < 1 {
			p.Attempts = 1
		}
		c.retry = p
	}
}

// WithClock replaces time.Now (timestamps written to the API).
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// New returns a client for the API at baseURL (e.g. "https://api.example.com").
// A nil httpClient means http.DefaultClient; a nil logger discards.
func New(baseURL string, httpClient *http.Client, logger *slog.Logger, opts ...Option) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		base:  strings.TrimRight(baseURL, "/"),
		http:  httpClient,
		log:   logger,
		retry: DefaultRetry(),
		now:   time.Now,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// credentials authenticate one request.
type credentials struct {
	authorization string   // the Authorization header value
	secrets       []string // scrubbed from every error and log line
}

// bearer is the user's token.
func bearer(token string) credentials {
	return credentials{authorization: "Bearer " + token, secrets: []string{token}}
}

// basic is HTTP Basic auth; the password is scrubbed raw and as the
// base64 header value an API might echo.
func basic(user, password string) credentials {
	encoded := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	return credentials{authorization: "Basic " + encoded, secrets: []string{password, encoded}}
}

// scrub removes the secrets from s: nothing the API echoes can leak them.
func (cr credentials) scrub(s string) string { return redact.Values(s, cr.secrets...) }

// call is one API request.
type call struct {
	method string
	path   string // already escaped, e.g. /v7/service(application=1,service_name='main')
	query  []param
	body   any // JSON-encoded when not nil
	creds  credentials
}

// do runs c with retries and decodes a 2xx JSON body into out (when out is
// not nil and the body is not empty). A non-2xx answer is an *APIError.
func (c *Client) do(ctx context.Context, cl call, out any) error {
	var payload []byte
	if cl.body != nil {
		var err error
		if payload, err = json.Marshal(cl.body); err != nil {
			return fmt.Errorf("open-balena-api %s %s: encode body: %w", cl.method, cl.path, err)
		}
	}
	target := c.base + cl.path
	if len(cl.query) > 0 {
		target += "?" + encodeQuery(cl.query)
	}
	for attempt := 1; ; attempt++ {
		retry, err := c.once(ctx, cl, target, payload, out, attempt)
		if !retry || attempt >= c.retry.Attempts {
			return err
		}
		if werr := c.retry.wait(ctx, attempt); werr != nil {
			return errors.Join(err, werr)
		}
	}
}

// once makes one try; retry says whether another may follow.
func (c *Client) once(ctx context.Context, cl call, target string, payload []byte, out any, attempt int) (retry bool, err error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, target, body)
	if err != nil {
		return false, fmt.Errorf("open-balena-api %s %s: %w", cl.method, cl.path, err)
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", cl.creds.authorization)

	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		retry = retryableNetErr(ctx, cl.method, err)
		c.log.LogAttrs(ctx, slog.LevelWarn, "open-balena-api request failed",
			slog.String("method", cl.method), slog.String("path", cl.path), slog.Int("attempt", attempt),
			slog.Bool("retry", retry), slog.String("error", cl.creds.scrub(err.Error())))
		if ctx.Err() != nil {
			return false, fmt.Errorf("open-balena-api %s %s: %w", cl.method, cl.path, context.Cause(ctx))
		}
		// url.Error's text holds the URL, which never holds a token.
		return retry, fmt.Errorf("open-balena-api %s %s: %w: %s", cl.method, cl.path, ErrUnavailable, cl.creds.scrub(err.Error()))
	}
	defer resp.Body.Close()
	c.log.LogAttrs(ctx, slog.LevelDebug, "open-balena-api",
		slog.String("method", cl.method), slog.String("path", cl.path), slog.Int("status", resp.StatusCode),
		slog.Int("attempt", attempt), slog.Duration("took", time.Since(start)))

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		apiErr := &APIError{Status: resp.StatusCode, Message: cl.creds.scrub(errorMessage(raw)), Method: cl.method, Path: cl.path}
		return retryableStatus(cl.method, resp.StatusCode), apiErr
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxSuccessBody))
	if err != nil {
		return cl.method != http.MethodPost, fmt.Errorf("open-balena-api %s %s: read body: %w: %s", cl.method, cl.path, ErrUnavailable, err)
	}
	if out == nil || len(bytes.TrimSpace(raw)) == 0 {
		return false, nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return false, fmt.Errorf("open-balena-api %s %s: decode %d body: %w", cl.method, cl.path, resp.StatusCode, err)
	}
	return false, nil
}

// errorMessage decodes pinejs's JSON string error body; anything else
// (Express's HTML 413 page) is kept short.
func errorMessage(raw []byte) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	msg := strings.TrimSpace(string(raw))
	if len(msg) > maxMessage {
		msg = msg[:maxMessage] + "…"
	}
	return msg
}

// keyString is an OData string key literal ready for a URL path segment.
func keyString(s string) string { return uriComponent(quote(s)) }
