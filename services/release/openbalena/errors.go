package openbalena

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors. They are always wrapped with context; test with errors.Is.
var (
	// ErrUnauthorized: the API answered 401 (bad, expired or missing token).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrFleetNotFound: no fleet has that slug, or the token cannot read it
	// (open-balena-api answers an unreadable row with an empty list).
	ErrFleetNotFound = errors.New("fleet not found")
	// ErrNotFound: a row read by id does not exist (or cannot be read).
	ErrNotFound = errors.New("not found")
	// ErrUnavailable: the API could not be reached, or answered 502/503/504,
	// after every retry.
	ErrUnavailable = errors.New("open-balena-api unavailable")
)

// APIError is a non-2xx answer of open-balena-api.
type APIError struct {
	Status int
	// Message is the decoded JSON string body (pinejs answers errors with a
	// JSON-encoded string), or the raw body cut short when it is not JSON
	// (a 413 is Express's HTML page). Empty for the real API's 500 on a
	// missing required field and for its 401s.
	Message string
	Method  string
	// Path is the URL path, without the query.
	Path string
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("open-balena-api %s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is makes errors.Is(err, ErrUnauthorized) true for a 401 and
// errors.Is(err, ErrUnavailable) true for 502, 503 and 504.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrUnavailable:
		return isUnavailableStatus(e.Status)
	}
	return false
}

func isUnavailableStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}
