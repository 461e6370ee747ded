package release

import (
	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	"github.com/open-balena-builder/builder/services/release/openbalena"
)

// apiStatus is the API's spelling of a final status; ok is false for
// STATUS_UNSPECIFIED and unknown values.
func apiStatus(s releasev1.Status) (string, bool) {
	switch s {
	case releasev1.Status_STATUS_SUCCESS:
		return openbalena.StatusSuccess, true
	case releasev1.Status_STATUS_FAILED:
		return openbalena.StatusFailed, true
	case releasev1.Status_STATUS_CANCELLED:
		return openbalena.StatusCancelled, true
	}
	return "", false
}

// protoStatus maps the API's status; running is STATUS_UNSPECIFIED.
func protoStatus(s string) releasev1.Status {
	switch s {
	case openbalena.StatusSuccess:
		return releasev1.Status_STATUS_SUCCESS
	case openbalena.StatusFailed, "error":
		return releasev1.Status_STATUS_FAILED
	case openbalena.StatusCancelled, "interrupted":
		return releasev1.Status_STATUS_CANCELLED
	}
	return releasev1.Status_STATUS_UNSPECIFIED
}
