package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/docker/docker/pkg/jsonmessage"
)

// readMessages decodes the Engine API's JSON message stream (build, push)
// and calls fn for each message until the stream ends or fn fails.
func readMessages(r io.Reader, fn func(*jsonmessage.JSONMessage) error) error {
	dec := json.NewDecoder(r)
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read message stream: %w", err)
		}
		if err := fn(&m); err != nil {
			return err
		}
	}
}

// messageError returns the error a message carries, or "".
func messageError(m *jsonmessage.JSONMessage) string {
	if m.Error != nil && m.Error.Message != "" {
		return m.Error.Message
	}
	return m.ErrorMessage //nolint:staticcheck // older daemons fill only this
}
