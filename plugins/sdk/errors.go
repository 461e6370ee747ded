package sdk

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors a plugin wraps (fmt.Errorf("...: %w", sdk.ErrNotFound)) so
// that the host sees the matching gRPC code, and errors.Is works on both
// sides of the boundary.
var (
	ErrInvalidArgument = errors.New("invalid argument")
	ErrNotFound        = errors.New("not found")
	ErrUnimplemented   = errors.New("not implemented")
	ErrUnavailable     = errors.New("unavailable")
)

// codeErrors pairs gRPC codes with the errors they stand for.
var codeErrors = []struct {
	code codes.Code
	err  error
}{
	{codes.Canceled, context.Canceled},
	{codes.DeadlineExceeded, context.DeadlineExceeded},
	{codes.InvalidArgument, ErrInvalidArgument},
	{codes.NotFound, ErrNotFound},
	{codes.Unimplemented, ErrUnimplemented},
	{codes.Unavailable, ErrUnavailable},
}

// RemoteError is an error that crossed the plugin boundary. Error() is the
// plugin's message unchanged; Unwrap gives the sentinel of its code (if any)
// and GRPCStatus keeps the code when the error is passed on over gRPC again.
type RemoteError struct {
	Code    codes.Code
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// GRPCStatus lets status.FromError and status.Code see the original code.
func (e *RemoteError) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// Unwrap returns the sentinel error for the code, or nil.
func (e *RemoteError) Unwrap() error {
	for _, ce := range codeErrors {
		if ce.code == e.Code {
			return ce.err
		}
	}
	return nil
}

// toStatus turns a plugin's error into a gRPC status error, keeping its message.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var re *RemoteError
	if errors.As(err, &re) {
		return status.Error(re.Code, err.Error())
	}
	for _, ce := range codeErrors {
		if errors.Is(err, ce.err) {
			return status.Error(ce.code, err.Error())
		}
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return status.Error(codes.Unknown, err.Error())
}

// fromStatus turns an error from a gRPC call back into a Go error: a
// *RemoteError carrying the code and the plugin's message.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &RemoteError{Code: st.Code(), Message: st.Message()}
}
