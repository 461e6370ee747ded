package stack

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Engine is a minimal Docker Engine API client over net/http.
// Host is "unix:///path/docker.sock" or "tcp://host:port".
// Paths are unversioned ("/images/load"): the daemon uses its own API version.
type Engine struct {
	Host string
	HTTP *http.Client
	base string
}

// NewEngine returns a client for dockerHost.
func NewEngine(dockerHost string) (*Engine, error) {
	u, err := url.Parse(dockerHost)
	if err != nil {
		return nil, fmt.Errorf("docker host %q: %w", dockerHost, err)
	}
	e := &Engine{Host: dockerHost}
	switch u.Scheme {
	case "unix":
		sock := u.Path
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
			DisableCompression: true,
		}
		e.HTTP = &http.Client{Transport: tr}
		e.base = "http://docker"
	case "tcp", "http":
		e.HTTP = &http.Client{Transport: &http.Transport{DisableCompression: true}}
		e.base = "http://" + u.Host
	default:
		return nil, fmt.Errorf("docker host %q: unsupported scheme %q", dockerHost, u.Scheme)
	}
	return e, nil
}

// Do sends a request and returns the response as is (any status).
// path may carry a query string; hdr may be nil.
func (e *Engine) Do(ctx context.Context, method, path string, body io.Reader, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, body)
	if err != nil {
		return nil, err
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	return e.HTTP.Do(req)
}

// Ping returns nil when GET /_ping answers 200 "OK".
func (e *Engine) Ping(ctx context.Context) error {
	resp, err := e.Do(ctx, http.MethodGet, "/_ping", nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "OK" {
		return fmt.Errorf("_ping: %s %q", resp.Status, b)
	}
	return nil
}

// JSON calls the API and decodes a JSON answer into out (if non-nil).
// Statuses >= 400 are returned as errors carrying the daemon's message.
func (e *Engine) JSON(ctx context.Context, method, path string, body io.Reader, hdr http.Header, out any) error {
	resp, err := e.Do(ctx, method, path, body, hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := statusError(method, path, resp); err != nil {
		return err
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// JSONMessage is one line of a build / load / push / pull progress stream.
type JSONMessage struct {
	Stream      string `json:"stream,omitempty"`
	Status      string `json:"status,omitempty"`
	ID          string `json:"id,omitempty"`
	Progress    string `json:"progress,omitempty"`
	Error       string `json:"error,omitempty"`
	ErrorDetail *struct {
		Code    int    `json:"code,omitempty"`
		Message string `json:"message,omitempty"`
	} `json:"errorDetail,omitempty"`
	Aux json.RawMessage `json:"aux,omitempty"`
}

// Stream calls an endpoint that answers with a JSON message stream
// (POST /build, /images/load, /images/{name}/push, ...). Each message is
// passed to fn (if non-nil). It returns the concatenated "stream" texts and
// an error for a status >= 400 or for an "error" message in the stream.
func (e *Engine) Stream(ctx context.Context, method, path string, body io.Reader, hdr http.Header, fn func(JSONMessage)) (string, error) {
	resp, err := e.Do(ctx, method, path, body, hdr)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if err := statusError(method, path, resp); err != nil {
		return "", err
	}
	return ReadStream(resp.Body, fn)
}

// ReadStream reads a JSON message stream; see Engine.Stream.
func ReadStream(r io.Reader, fn func(JSONMessage)) (string, error) {
	var out strings.Builder
	dec := json.NewDecoder(bufio.NewReader(r))
	for {
		var m JSONMessage
		if err := dec.Decode(&m); err == io.EOF {
			return out.String(), nil
		} else if err != nil {
			return out.String(), fmt.Errorf("reading stream: %w", err)
		}
		if fn != nil {
			fn(m)
		}
		out.WriteString(m.Stream)
		if m.Error != "" || m.ErrorDetail != nil {
			msg := m.Error
			if msg == "" {
				msg = m.ErrorDetail.Message
			}
			return out.String(), fmt.Errorf("daemon: %s", msg)
		}
	}
}

func statusError(method, path string, resp *http.Response) error {
	if resp.StatusCode < 400 {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	var m struct {
		Message string `json:"message"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &m) == nil && m.Message != "" {
		msg = m.Message
	}
	return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg)
}
