// Package usererr is the one kind of error a user caused and can fix: a bad
// upload, a broken compose file, a wrong balena.yml, a Dockerfile that is
// not there. Its message is written for the user (no Go wrapping, no
// internals) and reaches them as is, as InvalidArgument (HTTP 400). Every
// other error is the builder's own and is reported as such.
package usererr

import (
	"errors"
	"fmt"
)

// Error is a user's mistake, with the message that says how to fix it.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

// New returns an *Error with the formatted message.
func New(format string, args ...any) *Error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// As returns the user error in err's chain, if any.
func As(err error) (*Error, bool) {
	var ue *Error
	ok := errors.As(err, &ue)
	return ue, ok
}
